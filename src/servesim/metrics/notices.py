"""Warnings about a finished run whose results are probably not what the user meant (pure).

A run can be valid input and still be nonsense: every request rejected, or a trace whose times
are milliseconds read as seconds. Such runs complete (the results are what the input says),
but the summary carries one line per problem under `warnings` and the CLI prints them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from servesim.metrics.row_tags import RowTags
from servesim.metrics.summary import RequestColumns, STATE_NAMES

REJECTED = STATE_NAMES.index("rejected")
#: Warn when at least this share of the requests is rejected (the run measures little else).
REJECTED_SHARE = 0.5
#: A replayed trace longer than this, s, with a mean rate below SPARSE_RATE_PER_S looks like
#: times in the wrong unit: an hour of Azure requests in milliseconds read as seconds spans
#: 42 days at 0.005 req/s; real multi-day traces (BurstGPT, ServeGen) run at >= 0.1 req/s.
LONG_SPAN_S = 86400.0
SPARSE_RATE_PER_S = 0.01


def run_warnings(chunks: Callable[[], Iterable[RequestColumns]], extras: RowTags,
                 is_trace: bool) -> list[str]:
    """One line per problem found; empty for an ordinary run (`extras`: each row's kept tags;
    `chunks`: a function giving the requests' columns a chunk of rows at a time)."""
    out = []
    n = num_rejected = 0
    first = first_id = None  # the first rejected request's row and id
    lo_s, hi_s = np.inf, -np.inf  # first and last arrival
    for c in chunks():
        rejected = np.flatnonzero(c.state == REJECTED)
        if first is None and len(rejected):
            first, first_id = n + int(rejected[0]), c.id[rejected[0]]
        n += len(c.id)
        num_rejected += len(rejected)
        if len(c.id):
            lo_s, hi_s = min(lo_s, float(c.arrival_s.min())), max(hi_s, float(c.arrival_s.max()))
    if n and num_rejected >= REJECTED_SHARE * n:
        reason = extras.get(first).get("reject_reason", "no reason recorded")
        share = "every request" if num_rejected == n else f"{num_rejected:,} of {n:,} requests"
        out.append(f"{share} rejected ({num_rejected:,}); the first, request {first_id}: {reason}")
    if is_trace and n > 1:
        span_s = hi_s - lo_s
        if span_s > LONG_SPAN_S and n / span_s < SPARSE_RATE_PER_S:
            out.append(f"the trace's {n:,} requests arrive over {span_s / 86400:,.1f} days, one every "
                       f"{span_s / (n - 1):,.0f} s on average; if its times are milliseconds, name the "
                       "column timestamp_ms (arrival_s is seconds)")
    return out
