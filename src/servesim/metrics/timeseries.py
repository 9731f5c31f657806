"""Time series from the reduced step logs (a pure function), in intervals of `interval_s`.

Levels (running, waiting, KV usage) are time-weighted means over each interval: a step holds
its level from its start to its end, an idle replica holds zero. Counts (arrivals,
completions, prompt and output tokens) are attributed to the interval in which they happen
(tokens at the end of their step).

Rows cost memory in proportion to what happened, not to the simulated span: every interval in
which something happens is a row, and a run of two or more idle intervals (no step, arrival or
completion) is one row of zeros whose `interval_s` is the whole gap. Two requests a year apart
therefore give a handful of rows, not 31 million.

The series is built, and given, a block of BLOCK_INTERVALS intervals at a time: the replicas'
partials and the intervals of arrivals and completions are spooled (series_parts.py) and read
back in interval order, so building and writing a series holds a block of it, whatever the
simulated span. Every value is computed from the same operands, in the same order, as over the
whole series at once, so the bytes do not depend on the blocks.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from servesim.metrics.recorder import StepLog
from servesim.metrics.series_parts import POINTS, Spool, Stream, records
from servesim.metrics.step_reduce import LEVELS, StepReducer, floor_div, reduce_logs

COLUMNS = ("time_s", "interval_s", "arrivals", "finished", "prompt_tokens", "output_tokens",
           "num_running", "num_waiting", "kv_usage")
#: Intervals built at a time (what building the series holds: a few arrays of this length).
BLOCK_INTERVALS = 1 << 16

Times = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]


def timeseries(logs: list[StepLog], arrival_s: np.ndarray, finish_s: np.ndarray,
               interval_s: float) -> dict[str, np.ndarray]:
    """The time series of whole step logs (one per replica)."""
    return series(reduce_logs(logs, interval_s), lambda: [(arrival_s, finish_s)], interval_s)


def series(reducers: list[StepReducer], times: Times, interval_s: float,
           folder: str | None = None) -> dict[str, np.ndarray]:
    """The whole series at once (`series_blocks`, joined)."""
    blocks = [cols for cols, _ in series_blocks(reducers, times, interval_s, folder)]
    return {name: np.concatenate([b[name] for b in blocks]) for name in COLUMNS}


def series_blocks(reducers: list[StepReducer], times: Times, interval_s: float,
                  folder: str | None = None) -> Iterator[tuple[dict[str, np.ndarray], float | None]]:
    """The run's time series from its replicas' reduced step logs and the requests' (arrival,
    finish) times, which `times()` gives a chunk of rows at a time, as (columns of a block of
    rows, start of the next row in s, None after the last block). With several replicas levels
    are summed and KV usage is the share of all replicas' blocks. Scratch files go to `folder`
    (None: held in memory)."""
    points, last_arrival_s = _points(times, interval_s, folder)
    ends = [r.last_end_s for r in reducers if r.num_steps]
    end = max(max(ends, default=0.0), last_arrival_s)
    n = max(int(np.ceil(end / interval_s)), 1)
    reps = [_Replica(r) for r in reducers]
    pending = None  # the rows of the last block with something in it (their last right edge is not known)
    try:
        for rows, values in _blocks(points, reps, n):
            if pending is not None:
                yield _columns(*pending, rows[0], reps, interval_s), float(rows[0] * interval_s)
            pending = rows, values
    finally:
        if points.path is not None:
            points.path.unlink(missing_ok=True)
    yield _columns(*pending, n, reps, interval_s), None


def _points(times: Times, interval_s: float, folder: str | None) -> tuple[Spool, float]:
    """The intervals holding arrivals or completions (not clipped to the run's end), with their
    counts, spooled a chunk of rows at a time; and the last arrival (0 without requests)."""
    path = None
    if folder is not None:  # (a file of its own: two series may be built at once)
        fd, name = tempfile.mkstemp(prefix="series-points-", dir=folder)
        os.close(fd)
        path = Path(name)
    spool = Spool(POINTS, path)
    last_arrival_s = None
    for a, f in times():
        if len(a):
            last_arrival_s = float(a.max()) if last_arrival_s is None else max(last_arrival_s, float(a.max()))
        at, fin = floor_div(np.asarray(a, dtype=np.float64), interval_s), f[np.isfinite(f)]
        keys, inverse = np.unique(np.concatenate((at, floor_div(fin, interval_s))), return_inverse=True)
        spool.append(records(POINTS, k=keys, arrivals=np.bincount(inverse[:len(at)], minlength=len(keys)),
                             finished=np.bincount(inverse[len(at):], minlength=len(keys))))
    return spool, 0.0 if last_arrival_s is None else last_arrival_s


class _Replica:
    """Streams of one replica's partials, and the busy ranges that reach past the last block."""

    def __init__(self, r: StepReducer) -> None:
        self.interval_s = r.interval_s
        self.ranges = Stream(r.parts.ranges)
        self.tokens = Stream(r.parts.tokens)
        self.marks = Stream(r.parts.marks, last_wins=True)
        self.spanning = np.empty(0, dtype=r.parts.ranges.dtype)
        self._last: np.ndarray | None = None  # the last edge taken and its integrals

    def next_key(self) -> int | None:
        """The first interval not seen yet that holds a step."""
        if len(self.spanning):
            return int(self.spanning["k"].min())
        return self.ranges.next_key()

    def integrals(self, edges_k: np.ndarray) -> np.ndarray:
        """Integral of each level (columns in LEVELS order) from 0 to each edge `edges_k` x
        interval: its value at the last valued edge at or before it, 0 before the first. Edges
        come in increasing order across calls (a call starts at the previous call's last)."""
        marks = self.marks.take(int(edges_k[-1]) + 1)
        if self._last is not None:
            marks = np.concatenate((self._last, marks))
        if not len(marks):
            return np.zeros((len(edges_k), 3))
        self._last = marks[-1:]
        i = np.searchsorted(marks["k"], edges_k, side="right") - 1
        out = marks["v"][np.maximum(i, 0)]
        out[i < 0] = 0.0
        return out


def _blocks(points: Spool, reps: list[_Replica], n: int):
    """(row left edges, per-row counts) for each block of intervals that holds something, in
    order. A row is an interval holding a step, an arrival or a completion (interval 0 always),
    or the idle gap between two such intervals."""
    pts = Stream(points)
    last = None  # the last busy interval so far
    b0 = 0
    while b0 < n:
        b1 = min(b0 + BLOCK_INTERVALS, n)
        end = b1 if b1 < n else None  # (the last block takes everything left, clipped to n - 1)
        busy = np.zeros(b1 - b0, dtype=bool)
        busy[0] = b0 == 0
        counts = {name: np.zeros(b1 - b0, dtype=np.int64) for name in ("arrivals", "finished")}
        p = pts.take(end)
        k = np.minimum(p["k"], n - 1) - b0
        busy[k] = True
        for name, c in counts.items():
            np.add.at(c, k, p[name])
        prompt = output = 0
        for rep in reps:
            _mark_busy(rep, busy, b0, b1, end, n)
            t = rep.tokens.take(end)
            at = np.minimum(t["k"], n - 1) - b0
            prompt = prompt + np.bincount(at, weights=t["prompt"], minlength=b1 - b0)
            output = output + np.bincount(at, weights=t["output"], minlength=b1 - b0)
        counts["prompt_tokens"], counts["output_tokens"] = prompt, output
        held = np.flatnonzero(busy)
        if len(held):
            yield _rows(held + b0, held, counts, last)
            last = int(held[-1]) + b0
        b0 = _next_block(b1, pts, reps, n)


def _mark_busy(rep: _Replica, busy: np.ndarray, b0: int, b1: int, end: int | None, n: int) -> None:
    """Mark the intervals of block [b0, b1) that hold one of the replica's steps."""
    r = np.concatenate((rep.spanning, rep.ranges.take(end)))
    lo, hi = np.minimum(r["k"], n - 1), np.minimum(r["hi"], n - 1)
    inside = hi >= b0
    lo, hi = np.maximum(lo[inside], b0) - b0, np.minimum(hi[inside], b1 - 1) - b0
    cover = np.zeros(b1 - b0 + 1, dtype=np.int64)
    np.add.at(cover, lo, 1)
    np.add.at(cover, hi + 1, -1)
    busy |= np.cumsum(cover[:-1]) > 0
    rep.spanning = r[r["hi"] >= b1] if end is not None else r[:0]


def _next_block(b1: int, pts: Stream, reps: list[_Replica], n: int) -> int:
    """Start of the next block that may hold something (empty blocks are skipped)."""
    keys = [k for k in [pts.next_key()] + [rep.next_key() for rep in reps] if k is not None]
    if not keys:
        return n
    first = min(max(min(keys), b1), n - 1)
    return max(b1, first - first % BLOCK_INTERVALS)


def _rows(busy_k: np.ndarray, offset: np.ndarray, counts: dict[str, np.ndarray], last: int | None):
    """Left edges of the rows of a block's busy intervals `busy_k` (and of the gaps before
    them, from the previous busy interval `last`), and their counts (a gap's are 0)."""
    prev = np.concatenate(([busy_k[0] if last is None else last], busy_k[:-1]))
    gap = prev + 1 < busy_k  # an idle gap ends just before this busy interval
    rows = np.empty(len(busy_k) + int(gap.sum()), dtype=np.int64)
    at_busy = np.arange(len(busy_k)) + np.cumsum(gap)
    rows[at_busy] = busy_k
    is_gap = np.ones(len(rows), dtype=bool)
    is_gap[at_busy] = False
    rows[is_gap] = prev[gap] + 1
    values = {}
    for name, c in counts.items():
        values[name] = np.zeros(len(rows), dtype=c.dtype)
        values[name][at_busy] = c[offset]
    return rows, values


def _columns(rows: np.ndarray, values: dict[str, np.ndarray], next_k: int, reps: list[_Replica],
             interval_s: float) -> dict[str, np.ndarray]:
    """The columns of rows with left edges `rows` (the last one ends at `next_k`)."""
    edges_k = np.append(rows, next_k)
    width = np.diff(edges_k) * interval_s  # exactly interval_s for a one-interval row
    cols = {"time_s": rows * interval_s, "interval_s": width, **values}
    areas = [rep.integrals(edges_k) for rep in reps]
    for i, name in enumerate(LEVELS):
        cols[name] = sum(np.diff(a[:, i]) / width for a in areas)
    return cols
