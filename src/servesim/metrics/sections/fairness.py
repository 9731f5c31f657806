"""Per-tenant service and Jain's fairness index (reported when a run has >= 2 tenants).

Service is VTC's weighted token count `input_price * prompt tokens + output_price * output
tokens` (the scheduler's `input_price`/`output_price` when it has them, else VTC's defaults
1 and 2). A prompt counts when its first token is emitted, each output token when emitted.
`windows` gives every tenant's service per time window (the service *rate* VTC equalises
between backlogged tenants), `max_cumulative_gap` the largest difference of accumulated
service between two tenants at any window end. Jain's index (sum x)^2 / (n * sum x^2) is 1
when every tenant got the same service and 1/n when one got everything; tenants that asked
for less than their share lower it without any unfairness, so read it with the demand.
"""

from __future__ import annotations

import math

import numpy as np

from servesim.metrics.sections import SectionInput

KEY = "fairness"
MAX_WINDOWS = 60


def jain_index(values) -> float | None:
    x = np.asarray(values, dtype=float)
    total = float((x * x).sum())
    return None if len(x) == 0 or total == 0 else float(x.sum() ** 2 / (len(x) * total))


def section(data: SectionInput) -> dict | None:
    codes = data.table.cols["tenant"]  # (label codes: one tenant known without decoding every row)
    if len(codes) == 0 or codes.min() == codes.max():
        return None
    labels = data.table.labels("tenant")
    tenants = sorted(set(labels))
    sched = data.params.get("scheduler") or {}
    w_in = float(sched.get("input_price", 1.0))
    w_out = float(sched.get("output_price", 2.0))
    end_s = float(data.step_ends_s.max()) if len(data.step_ends_s) else 0.0
    interval = float((data.params.get("output") or {}).get("timeseries_interval_s", 1.0))
    window_s = max(interval, math.ceil(end_s / MAX_WINDOWS / interval) * interval) if end_s > 0 else interval
    edges = np.arange(0.0, end_s + window_s, window_s)
    if len(edges) < 2:
        edges = np.array([0.0, window_s])
    c = data.table.cols
    per: dict[str, dict] = {}
    windows: dict[str, list[float]] = {}
    for u in tenants:
        rows = np.flatnonzero(labels == u)
        first_s, arrival_s, prompt = c["first_token_s"][rows], c["arrival_s"][rows], c["prompt_len"][rows]
        started = ~np.isnan(first_s)
        in_tok = int(prompt[started].sum())
        out_tok = int(c["num_output_tokens"][rows].sum())
        emitting = rows[c["num_runs"][rows] > 0]
        out_hist = (np.histogram(data.token_times_of(emitting), edges)[0] if len(emitting)
                    else np.zeros(len(edges) - 1))
        in_hist = np.histogram(first_s[started], edges, weights=prompt[started])[0]
        windows[u] = (w_in * in_hist + w_out * out_hist).tolist()
        finished = (~np.isnan(c["finish_s"][rows]) & started
                    & (c["num_output_tokens"][rows] == c["output_len"][rows]))
        per[u] = {
            "requests": len(rows),
            "input_tokens": in_tok,
            "output_tokens": out_tok,
            "service": w_in * in_tok + w_out * out_tok,
            "mean_ttft_s": float(np.mean(first_s[started] - arrival_s[started])) if started.any() else None,
            "mean_e2e_s": (float(np.mean(c["finish_s"][rows][finished] - arrival_s[finished]))
                           if finished.any() else None),
        }
    total = sum(p["service"] for p in per.values())
    for p in per.values():
        p["service_share"] = p["service"] / total if total else None
    cumulative = np.cumsum(np.array([windows[u] for u in tenants]), axis=1)
    gap = float((cumulative.max(axis=0) - cumulative.min(axis=0)).max()) if cumulative.size else 0.0
    return {
        "input_price": w_in,
        "output_price": w_out,
        "tenants": per,
        "jain_index": jain_index([per[u]["service"] for u in tenants]),
        "window_s": window_s,
        "windows": windows,
        "max_cumulative_gap": gap,
    }
