"""Time series from the raw step log (a pure function), in intervals of `interval_s`.

Levels (running, waiting, KV usage) are time-weighted means over each interval: a step holds
its level from its start to its end, an idle replica holds zero. Counts (arrivals,
completions, prompt and output tokens) are attributed to the interval in which they happen
(tokens at the end of their step).

Rows cost memory in proportion to what happened, not to the simulated span: every interval in
which something happens is a row, and a run of two or more idle intervals (no step, arrival or
completion) is one row of zeros whose `interval_s` is the whole gap. Two requests a year apart
therefore give a handful of rows, not 31 million.
"""

from __future__ import annotations

import numpy as np

from servesim.metrics.recorder import StepLog

COLUMNS = ("time_s", "interval_s", "arrivals", "finished", "prompt_tokens", "output_tokens",
           "num_running", "num_waiting", "kv_usage")


def _integral(edges: np.ndarray, starts: np.ndarray, ends: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Integral of a piecewise-constant level (zero between steps) from 0 to each edge."""
    area = np.concatenate(([0.0], np.cumsum(level * (ends - starts))))
    i = np.searchsorted(starts, edges, side="right")  # steps starting at or before the edge
    partial = np.zeros(len(edges))
    inside = i > 0
    j = i[inside] - 1
    partial[inside] = level[j] * np.clip(edges[inside] - starts[j], 0.0, ends[j] - starts[j])
    return area[np.maximum(i - 1, 0)] * inside + partial


def _row_edges(lo: np.ndarray, hi: np.ndarray, n: int) -> np.ndarray:
    """Left edges (interval indices) of the rows, then `n`: every interval of a busy range
    [lo, hi], and one row for each gap between ranges."""
    order = np.argsort(lo, kind="stable")
    lo, hi = lo[order], hi[order]
    reach = np.maximum.accumulate(hi)
    new = np.concatenate(([True], lo[1:] > reach[:-1] + 1))  # a gap of >= 1 idle interval before it
    starts = lo[new]
    ends = np.append(reach[np.flatnonzero(new)[1:] - 1], reach[-1])  # merged ranges [starts, ends]
    lens = ends - starts + 1
    busy = np.repeat(starts, lens) + (np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens))
    gaps = ends[:-1] + 1
    return np.concatenate((np.sort(np.concatenate((busy, gaps))), [n]))


def _busy_ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One replica's step ranges [lo, hi] (interval indices, in time order) merged as
    `_row_edges` merges them (overlapping or adjacent), so rows are found from a few ranges
    instead of one per step."""
    if len(lo) < 2:
        return lo, hi
    new = np.flatnonzero(lo[1:] > hi[:-1] + 1) + 1  # a range that starts after an idle interval
    return lo[np.concatenate(([0], new))], hi[np.concatenate((new - 1, [len(hi) - 1]))]


def timeseries(logs: list[StepLog], arrival_s: np.ndarray, finish_s: np.ndarray,
               interval_s: float) -> dict[str, np.ndarray]:
    """The run's time series; with several replicas (one step log each) levels are summed and
    KV usage is the share of all replicas' blocks."""
    ends = [float(g.end_s[-1]) for g in logs if len(g)]
    end = max(max(ends, default=0.0), float(arrival_s.max()) if len(arrival_s) else 0.0)
    n = max(int(np.ceil(end / interval_s)), 1)
    finish_s = finish_s[np.isfinite(finish_s)]

    def index(times: np.ndarray) -> np.ndarray:
        return np.minimum((times // interval_s).astype(np.int64), n - 1)

    points = index(np.concatenate((arrival_s, finish_s)))
    busy = [_busy_ranges(index(g.start_s), index(g.end_s)) for g in logs]
    lo = np.concatenate([[0], *(b[0] for b in busy), points])  # interval 0 always starts the series
    hi = np.concatenate([[0], *(b[1] for b in busy), points])
    rows = _row_edges(lo, hi, n)
    edges = rows * interval_s
    width = np.diff(rows) * interval_s  # exactly interval_s for a one-interval row
    cols = {"time_s": edges[:-1], "interval_s": width}

    def count(times: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        row = np.searchsorted(rows, index(times), side="right") - 1
        return np.bincount(row, weights=weights, minlength=len(width))[:len(width)]

    cols["arrivals"] = count(arrival_s)
    cols["finished"] = count(finish_s)
    cols["prompt_tokens"] = sum(count(g.end_s, g.prefill_tokens) for g in logs)
    cols["output_tokens"] = sum(count(g.end_s, g.output_tokens) for g in logs)
    total_blocks = sum(g.num_gpu_blocks for g in logs)
    for name in ("num_running", "num_waiting", "kv_usage"):
        cols[name] = sum(np.diff(_integral(edges, g.start_s, g.end_s, _level(g, name, total_blocks))) / width
                         for g in logs)
    return cols


def _level(steps: StepLog, name: str, total_blocks: int) -> np.ndarray:
    return steps.kv_used_blocks / total_blocks if name == "kv_usage" else getattr(steps, name)
