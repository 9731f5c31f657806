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
from servesim.metrics.stream_stats import StreamValues
from servesim.sums import left_sum

KEY = "fairness"
MAX_WINDOWS = 60


def jain_index(values) -> float | None:
    x = np.asarray(values, dtype=float)
    total = float((x * x).sum())
    return None if len(x) == 0 or total == 0 else float(x.sum() ** 2 / (len(x) * total))


class _Tenant:
    """One tenant's running totals over the table's row chunks."""

    def __init__(self, num_windows: int, folder) -> None:
        self.requests = self.input_tokens = self.output_tokens = 0
        self.in_hist = np.zeros(num_windows)
        self.out_hist = np.zeros(num_windows, dtype=np.int64)
        self.ttft, self.e2e = StreamValues(folder), StreamValues(folder)

    def add(self, c: dict, rows: np.ndarray, first_row: int, data: SectionInput, edges: np.ndarray) -> None:
        """Its `rows` of a chunk (`c`: the chunk's columns; `first_row`: the chunk's first row in the table)."""
        first_s, arrival_s, prompt = c["first_token_s"][rows], c["arrival_s"][rows], c["prompt_len"][rows]
        started = ~np.isnan(first_s)
        self.requests += len(rows)
        self.input_tokens += int(prompt[started].sum())
        self.output_tokens += int(c["num_output_tokens"][rows].sum())
        emitting = rows[c["num_runs"][rows] > 0] + first_row
        for _, times, _ in data.token_times_chunks(emitting):  # (512 requests' tokens at a time)
            self.out_hist += np.histogram(times, edges)[0]
        self.in_hist += np.histogram(first_s[started], edges, weights=prompt[started])[0]
        self.ttft.add(first_s[started] - arrival_s[started])
        finished = (~np.isnan(c["finish_s"][rows]) & started
                    & (c["num_output_tokens"][rows] == c["output_len"][rows]))
        self.e2e.add(c["finish_s"][rows][finished] - arrival_s[finished])

    def report(self, w_in: float, w_out: float) -> dict:
        return {"requests": self.requests, "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "service": w_in * self.input_tokens + w_out * self.output_tokens,
                "mean_ttft_s": self.ttft.mean() if len(self.ttft) else None,
                "mean_e2e_s": self.e2e.mean() if len(self.e2e) else None}


def _windows(data: SectionInput) -> tuple[float, np.ndarray]:
    """The window length (a multiple of the time series' interval, at most MAX_WINDOWS over the
    run) and the windows' edges from 0."""
    end_s = float(data.step_ends_s.max()) if len(data.step_ends_s) else 0.0
    interval = float((data.params.get("output") or {}).get("timeseries_interval_s", 1.0))
    window_s = max(interval, math.ceil(end_s / MAX_WINDOWS / interval) * interval) if end_s > 0 else interval
    edges = np.arange(0.0, end_s + window_s, window_s)
    return window_s, edges if len(edges) >= 2 else np.array([0.0, window_s])


def _accumulate(data: SectionInput, edges: np.ndarray, acc: dict[str, _Tenant]) -> None:
    """Each tenant's totals, into `acc`. Row chunks (every row at once when the table is in
    memory): each tenant's values are taken in row order, so means and histograms are those of
    its whole columns, bit for bit."""
    t = data.table
    for chunk in t.chunks():
        c = {k: t.cols[k][chunk] for k in ("first_token_s", "arrival_s", "prompt_len", "num_output_tokens",
                                            "output_len", "finish_s", "num_runs")}
        labels = t.labels("tenant", chunk)
        for u in set(labels):
            a = acc.get(u) or acc.setdefault(u, _Tenant(len(edges) - 1, data.folder))
            a.add(c, np.flatnonzero(labels == u), chunk.start, data, edges)


def section(data: SectionInput) -> dict | None:
    t = data.table
    # (label codes, a chunk at a time: one tenant known without decoding every row; the first
    # chunk's code compared with every chunk's, so the column is read once)
    if not len(t):
        return None
    codes = t.cols["tenant"]
    first = int(codes[0])
    if all((codes[rows] == first).all() for rows in t.chunks()):
        return None
    sched = data.params.get("scheduler") or {}
    w_in = float(sched.get("input_price", 1.0))
    w_out = float(sched.get("output_price", 2.0))
    window_s, edges = _windows(data)
    acc: dict[str, _Tenant] = {}
    try:
        _accumulate(data, edges, acc)
        tenants = sorted(acc)
        per = {u: acc[u].report(w_in, w_out) for u in tenants}
    finally:
        for a in acc.values():
            a.ttft.close(), a.e2e.close()
    windows = {u: (w_in * acc[u].in_hist + w_out * acc[u].out_hist).tolist() for u in tenants}
    total = left_sum(p["service"] for p in per.values())
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
