"""Warnings about a finished run whose results are probably not what the user meant (pure).

A run can be valid input and still be nonsense: every request rejected, or a trace whose times
are milliseconds read as seconds. Such runs complete (the results are what the input says),
but the summary carries one line per problem under `warnings` and the CLI prints them.
"""

from __future__ import annotations

import numpy as np

from servesim.metrics.summary import RequestColumns, STATE_NAMES

REJECTED = STATE_NAMES.index("rejected")
#: Warn when at least this share of the requests is rejected (the run measures little else).
REJECTED_SHARE = 0.5
#: A replayed trace longer than this, s, with a mean rate below SPARSE_RATE_PER_S looks like
#: times in the wrong unit: an hour of Azure requests in milliseconds read as seconds spans
#: 42 days at 0.005 req/s; real multi-day traces (BurstGPT, ServeGen) run at >= 0.1 req/s.
LONG_SPAN_S = 86400.0
SPARSE_RATE_PER_S = 0.01


def run_warnings(cols: RequestColumns, extras: dict[int, dict], is_trace: bool) -> list[str]:
    """One line per problem found; empty for an ordinary run (`extras`: each row's kept tags)."""
    out = []
    n = len(cols.id)
    rejected = np.flatnonzero(cols.state == REJECTED)
    if n and len(rejected) >= REJECTED_SHARE * n:
        first = int(rejected[0])
        reason = extras.get(first, {}).get("reject_reason", "no reason recorded")
        share = "every request" if len(rejected) == n else f"{len(rejected):,} of {n:,} requests"
        out.append(f"{share} rejected ({len(rejected):,}); the first, request {cols.id[first]}: {reason}")
    if is_trace and n > 1:
        span_s = float(cols.arrival_s.max() - cols.arrival_s.min())
        if span_s > LONG_SPAN_S and n / span_s < SPARSE_RATE_PER_S:
            out.append(f"the trace's {n:,} requests arrive over {span_s / 86400:,.1f} days, one every "
                       f"{span_s / (n - 1):,.0f} s on average; if its times are milliseconds, name the "
                       "column timestamp_ms (arrival_s is seconds)")
    return out
