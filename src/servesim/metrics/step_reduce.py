"""One replica's step log reduced as it arrives, to exactly what the outputs read.

The summary reads totals (steps, tokens, the last step end), busy time and time-weighted
levels (running, waiting, KV blocks: sums of level x step duration), and the step end times
(inter-token gaps; summary sections that look at single tokens). The time series reads, per
interval, the integral of each level up to the interval's edge, the tokens of the steps that
end in it, and which intervals hold a step. All of these are reduced chunk by chunk:

- sums are `ExactSum`s, so they do not depend on the chunking;
- level integrals are cumulative sums carried from chunk to chunk (numpy's cumulative sum
  adds in order, so the carried sum is bit for bit the one over the whole log), evaluated
  at every interval edge a step touches; an edge no step touches holds the integral after
  the last step before it;
- step end times go to a file (8 bytes a step on disk, read back in chunks), or are left to
  the full log when the recorder keeps it; a replica's first chunk is held, and later ones
  while the run's budget of held bytes (`HeldBytes`, `HELD_BYTES`) has room, so a run of a few
  chunks a replica (most short runs) makes no file.

The time-series partials of each chunk go to spools (series_parts.py), files beside the step
ends when there is a spill folder (held as the ends are): memory held does not grow with the
steps nor with the intervals beyond that budget; the time series reads them back a block of
intervals at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from servesim.metrics.exact import ExactSum
from servesim.metrics.recorder import StepLog, positions
from servesim.metrics.series_parts import HeldBytes, HeldFile, SeriesParts

LEVELS = ("num_running", "num_waiting", "kv_usage")


class StepReducer:
    """Totals, sums and time-series partials of one replica's steps (see the module doc)."""

    def __init__(self, interval_s: float, total_blocks: int, ends_path: Path | None = None,
                 held: HeldBytes | None = None) -> None:
        self.interval_s = interval_s  # the time series' interval
        self.total_blocks = total_blocks  # KV blocks of every replica the time series sums (KV usage share)
        self.num_steps = 0
        self.last_end_s = float("-inf")
        self.output_tokens = 0
        self.backwards = False  # a step ended before the previous one, or before it started
        self.busy_s = ExactSum()
        self.level_s = {"num_running": ExactSum(), "num_waiting": ExactSum(), "kv_used_blocks": ExactSum()}
        self.ends_path = ends_path  # (made when the step ends spill: `append_to`)
        # the step ends, held while the run's `held` has room (`HeldFile`: a run of a few chunks a
        # replica writes no file)
        self._ends = HeldFile(ends_path, held)
        self._area = [0.0, 0.0, 0.0]  # integral of each level up to the last step's end
        # busy interval ranges, tokens per interval and integrals at edges, per chunk
        self.parts = SeriesParts(None if ends_path is None else ends_path.with_suffix(""), held)

    def add(self, log: StepLog) -> None:
        n = len(log)
        if not n:
            return
        start, end = log.start_s, log.end_s
        if end[0] < self.last_end_s or (end[1:] < end[:-1]).any() or (end < start).any():
            self.backwards = True
        self.num_steps += n
        self.last_end_s = float(end[-1])
        self.output_tokens += int(log.output_tokens.sum())
        busy = end - start
        self.busy_s.add(busy)
        running_s = log.num_running * busy  # (the time series' integral reads it too)
        self.level_s["num_running"].add(running_s)
        self.level_s["num_waiting"].add(log.num_waiting * busy)
        self.level_s["kv_used_blocks"].add(log.kv_used_blocks * busy)
        if self.ends_path is not None:
            self._ends.append(np.array(end, dtype=np.float64))  # (a copy: the log's arrays are the buffer's)
        self._reduce_series(log, busy, running_s)

    def _reduce_series(self, log: StepLog, busy: np.ndarray, running_s: np.ndarray | None = None) -> None:
        interval = self.interval_s
        start, end = log.start_s, log.end_s
        hi = floor_div(end, interval)
        ranges = busy_ranges(start_intervals(start, end, hi, interval), hi)
        tokens = tokens_by_interval(hi, log.prefill_tokens, log.output_tokens)
        # the edges around the busy ranges (a margin of one before and two after, for
        # floor-division rounding), each valued by the last step starting at or before it,
        # as the whole-log integral does
        edge_k = unique_sorted(np.sort(positions(ranges[0] - 1, ranges[1] - ranges[0] + 4)))[0]
        edge_s = edge_k * interval
        step = np.searchsorted(start, edge_s, side="right") - 1
        ok = step >= 0  # (edges before the chunk's first step keep the earlier chunks' value)
        step, edge_k, edge_s = step[ok], edge_k[ok], edge_s[ok]
        values = np.empty((len(step), 3))
        for i, level in enumerate(self._levels(log)):
            if not level.any():  # (an empty queue: the integral stays where it was, exactly)
                values[:, i] = self._area[i]
                continue
            weighted = running_s if i == 0 and running_s is not None else level * busy
            area = np.cumsum(np.concatenate(([self._area[i]], weighted)))  # before each step, carried
            self._area[i] = float(area[-1])
            values[:, i] = area[step] + level[step] * np.clip(edge_s - start[step], 0.0, busy[step])
        self.parts.add(*ranges, *tokens, edge_k, values)

    def _levels(self, log: StepLog) -> tuple[np.ndarray, ...]:
        return log.num_running, log.num_waiting, log.kv_used_blocks / self.total_blocks

    def hold_no_more(self) -> None:
        """From now on hold only what the first chunk's rule holds (reducers handed to the step
        log's helper process, whose pickles come back through a pipe, and whose parent's copies
        would keep the held bytes twice): the step ends and partials held beyond a first piece go
        to their files now."""
        self._ends.hold_no_more()
        self.parts.hold_no_more()

    @property
    def held_ends(self) -> np.ndarray | None:
        """Every step end, when none went to the file (None: they are in `ends_path`, or not kept)."""
        held = self._ends.held
        if self._ends.spilled or not held:
            return None
        if len(held) > 1:
            held[:] = [np.concatenate(held)]
        return held[0]

    def nbytes(self) -> int:
        """Bytes held in memory: the time-series partials (none per interval when spooled to
        files) and the step ends not in the file."""
        return self.parts.nbytes() + self._ends.held_nbytes()


def floor_div(times: np.ndarray, interval: float) -> np.ndarray:
    """`(times // interval).astype(np.int64)`, bit for bit, about 20 times faster.

    numpy's float floor division is the floor of the exact quotient, and costs ~30 ns a value.
    The rounded quotient q = times / interval has the same floor whenever q is not an integer
    (rounding is monotonic and integers are representable, so it cannot cross one), so only
    the values whose rounded quotient is an integer are divided the slow way."""
    q = times / interval
    out = np.floor(q)
    whole = np.flatnonzero(out == q)
    if len(whole):
        out[whole] = times[whole] // interval
    return out.astype(np.int64)


def start_intervals(start: np.ndarray, end: np.ndarray, end_k: np.ndarray, interval: float) -> np.ndarray:
    """`floor_div(start, interval)`, given `end_k = floor_div(end, interval)`: a step that
    starts when the one before it ends (every step of a stretch but its first) starts in the
    interval that one ended in, so only the other starts are divided."""
    lo = np.empty_like(end_k)
    lo[1:] = end_k[:-1]
    own = np.concatenate(([0], np.flatnonzero(start[1:] != end[:-1]) + 1))
    lo[own] = floor_div(start[own], interval)
    return lo


def tokens_by_interval(end_k: np.ndarray, prefill: np.ndarray, output: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(intervals in which steps end, prompt tokens and output tokens of those steps), as
    `np.unique(end_k, return_inverse=True)` and two weighted `np.bincount`s over it give
    them, without the sort when `end_k` never decreases (one replica's steps, in order: the
    usual case). Token counts are integers, so sums in any order are those floats exactly:
    each group's are summed as integers (`reduceat`: one pass, where running totals read at
    the group ends took a cumulative sum, a third of this function's time)."""
    n = len(end_k)
    if n < 2 or not (end_k[1:] >= end_k[:-1]).all():
        at, inverse = unique_sorted(end_k)
        return at, np.bincount(inverse, weights=prefill), np.bincount(inverse, weights=output)
    first = np.concatenate(([0], np.flatnonzero(end_k[1:] != end_k[:-1]) + 1))  # each group's first step
    out = np.add.reduceat(output, first, dtype=np.int64).astype(np.float64)
    pre = np.add.reduceat(prefill, first, dtype=np.int64).astype(np.float64)
    return end_k[first], pre, out


def unique_sorted(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`np.unique(values, return_inverse=True)` without its sort when `values` never decrease
    (step ends of one replica, in order: the usual case)."""
    change = values[1:] != values[:-1]
    if len(values) < 2 or not (values[1:] >= values[:-1]).all():
        return np.unique(values, return_inverse=True)
    inverse = np.zeros(len(values), dtype=np.intp)
    np.cumsum(change, out=inverse[1:])
    return values[np.concatenate(([0], np.flatnonzero(change) + 1))], inverse


def busy_ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step ranges [lo, hi] (interval indices, in time order) merged where they overlap or
    touch, so rows are found from a few ranges instead of one per step."""
    if len(lo) < 2:
        return lo, hi
    new = np.flatnonzero(lo[1:] > hi[:-1] + 1) + 1  # a range that starts after an idle interval
    return lo[np.concatenate(([0], new))], hi[np.concatenate((new - 1, [len(hi) - 1]))]


def reduce_logs(logs: list[StepLog], interval_s: float) -> list[StepReducer]:
    """Reducers of whole logs (the time series of logs given as such)."""
    total = sum(g.num_gpu_blocks for g in logs)
    out = []
    for g in logs:
        r = StepReducer(interval_s, total)
        r.add(g)
        out.append(r)
    return out
