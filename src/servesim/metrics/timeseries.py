"""Time series from the reduced step logs (a pure function), in intervals of `interval_s`.

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

from collections.abc import Callable, Iterable

import numpy as np

from servesim.metrics.recorder import StepLog, positions
from servesim.metrics.step_reduce import LEVELS, StepReducer, reduce_logs

COLUMNS = ("time_s", "interval_s", "arrivals", "finished", "prompt_tokens", "output_tokens",
           "num_running", "num_waiting", "kv_usage")


def _row_edges(lo: np.ndarray, hi: np.ndarray, n: int) -> np.ndarray:
    """Left edges (interval indices) of the rows, then `n`: every interval of a busy range
    [lo, hi], and one row for each gap between ranges."""
    order = np.argsort(lo, kind="stable")
    lo, hi = lo[order], hi[order]
    reach = np.maximum.accumulate(hi)
    new = np.concatenate(([True], lo[1:] > reach[:-1] + 1))  # a gap of >= 1 idle interval before it
    starts = lo[new]
    ends = np.append(reach[np.flatnonzero(new)[1:] - 1], reach[-1])  # merged ranges [starts, ends]
    busy = positions(starts, ends - starts + 1)
    gaps = ends[:-1] + 1
    return np.concatenate((np.sort(np.concatenate((busy, gaps))), [n]))


def timeseries(logs: list[StepLog], arrival_s: np.ndarray, finish_s: np.ndarray,
               interval_s: float) -> dict[str, np.ndarray]:
    """The time series of whole step logs (one per replica)."""
    return series(reduce_logs(logs, interval_s), lambda: [(arrival_s, finish_s)], interval_s)


def series(reducers: list[StepReducer], times: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]],
           interval_s: float) -> dict[str, np.ndarray]:
    """The run's time series from its replicas' reduced step logs and the requests' (arrival,
    finish) times, which `times()` gives a chunk of rows at a time; with several replicas
    levels are summed and KV usage is the share of all replicas' blocks."""
    ends = [r.last_end_s for r in reducers if r.num_steps]
    last_arrival_s = max((float(a.max()) for a, _ in times() if len(a)), default=0.0)
    end = max(max(ends, default=0.0), last_arrival_s)
    n = max(int(np.ceil(end / interval_s)), 1)

    def index(times: np.ndarray) -> np.ndarray:
        return np.minimum((times // interval_s).astype(np.int64), n - 1)

    # intervals holding an arrival or a completion, each once (rows depend on which, not on how
    # many: one entry per interval instead of two per request keeps the passes below small)
    points = np.unique(np.concatenate([np.empty(0, dtype=np.int64)] + [
        np.union1d(index(a), index(f[np.isfinite(f)])) for a, f in times()]))
    busy = [r.busy_ranges(n - 1) for r in reducers]
    lo = np.concatenate([[0], *(b[0] for b in busy), points])  # interval 0 always starts the series
    hi = np.concatenate([[0], *(b[1] for b in busy), points])
    rows = _row_edges(lo, hi, n)
    edges = rows * interval_s
    width = np.diff(rows) * interval_s  # exactly interval_s for a one-interval row
    cols = {"time_s": edges[:-1], "interval_s": width}

    def count(at: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        row = np.searchsorted(rows, at, side="right") - 1
        return np.bincount(row, weights=weights, minlength=len(width))[:len(width)]

    cols["arrivals"] = cols["finished"] = np.zeros(len(width), dtype=np.int64)
    for a, f in times():
        cols["arrivals"] = cols["arrivals"] + count(index(a))
        cols["finished"] = cols["finished"] + count(index(f[np.isfinite(f)]))
    tokens = [r.tokens(n - 1) for r in reducers]
    cols["prompt_tokens"] = sum(count(at, prompt) for at, prompt, _ in tokens)
    cols["output_tokens"] = sum(count(at, output) for at, _, output in tokens)
    areas = [r.integrals(rows) for r in reducers]
    for i, name in enumerate(LEVELS):
        cols[name] = sum(np.diff(a[:, i]) / width for a in areas)
    return cols
