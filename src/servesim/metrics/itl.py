"""Inter-token latencies from the requests' token runs, reduced out of core.

Every gap between consecutive tokens of a request, as (gap, multiplicity) pairs: inside a run
[a, b] the gaps are the step-to-step gaps end[i+1] - end[i] for a <= i < b; many requests share
the same steps, so step i's gap counts the runs with start <= i < end. Those counts come a
chunk of steps at a time (the step ends are read in chunks) from the run bounds: sorted in
memory when the runs come as one chunk of rows (a table in memory, or a small one); sorted
into one file per chunk of steps (`BoundFiles`) when they come in several (a spilled table),
so memory holds a chunk of steps and of runs, not every run. Gaps between consecutive runs of one request (it was skipped or
preempted) are listed one by one. Work scales with steps and runs, not tokens.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from servesim.metrics.exact import WeightedValues
from servesim.metrics.step_ends import StepEnds

#: A run's token emissions as (runs per request, run starts, run ends): request i emitted one
#: token at the end of every step of its runs, inclusive ranges of the (concatenated) step log.
TokenRuns = tuple[np.ndarray, np.ndarray, np.ndarray]
#: A function giving the token runs a chunk of rows at a time (one chunk when they are in memory).
RunChunks = Callable[[], Iterable[TokenRuns]]


class SortedBounds:
    """Run bounds (step indices) held in memory: counted per step (`num_steps` steps: the
    counts up to each step, without a sort) where the steps are not many more than the bounds,
    else sorted."""

    def __init__(self, bounds: np.ndarray, num_steps: int) -> None:
        self.upto_step = self.sorted = None
        if num_steps <= 4 * len(bounds):  # (an array a step, no larger than a few of the bounds')
            self.upto_step = np.cumsum(np.bincount(bounds, minlength=num_steps))
        else:
            self.sorted = np.sort(bounds)

    def upto(self, k: int, lo: int, hi: int) -> np.ndarray:
        """For each step i in [lo, hi): how many bounds are <= i (`k`: the chunk of steps)."""
        if self.upto_step is not None:
            return self.upto_step[lo:hi]
        a, inside = self.counts(lo, hi)
        return a + np.cumsum(inside)

    def counts(self, lo: int, hi: int) -> tuple[int, np.ndarray]:
        """(How many sorted bounds are < lo, how many equal each step i in [lo, hi))."""
        a, b = np.searchsorted(self.sorted, [lo, hi])
        return int(a), np.bincount(self.sorted[a:b] - lo, minlength=hi - lo)

    def close(self) -> None:
        pass


class BoundFiles:
    """Run bounds sorted into one file per chunk of steps (`firsts`: first step of each chunk,
    as `StepEnds.chunks` gives them); `upto` reads one chunk's file."""

    def __init__(self, firsts: np.ndarray, folder: str | None) -> None:
        self.firsts = firsts
        self.before = np.zeros(len(firsts) + 1, dtype=np.int64)  # bounds in each chunk, then cumulated
        self.dir = Path(tempfile.mkdtemp(prefix="bounds-", dir=folder))

    def add(self, bounds: np.ndarray) -> None:
        chunk = np.searchsorted(self.firsts, bounds, side="right") - 1
        order = np.argsort(chunk, kind="stable")
        chunk, bounds = chunk[order], bounds[order]
        cuts = np.flatnonzero(np.diff(chunk)) + 1
        for part, k in zip(np.split(bounds, cuts), chunk[np.concatenate(([0], cuts))].tolist() if len(chunk) else []):
            with open(self.dir / f"{k}.i8", "ab") as f:
                part.astype(np.int64).tofile(f)
            self.before[k + 1] += len(part)

    def done(self) -> None:
        np.cumsum(self.before, out=self.before)  # before[k]: bounds below chunk k

    def upto(self, k: int, lo: int, hi: int) -> np.ndarray:
        path = self.dir / f"{k}.i8"
        mine = np.fromfile(path, np.int64) if path.exists() else np.empty(0, dtype=np.int64)
        first = int(self.firsts[k])
        counts = self.before[k] + np.cumsum(np.bincount(mine - first, minlength=hi - first))
        counts = np.concatenate(([self.before[k]], counts))  # from step first - 1
        return counts[lo - first + 1:hi - first + 1]

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def itl_values(chunks: RunChunks, ends: StepEnds, folder: str | None = None) -> WeightedValues:
    """Every inter-token gap, as (gap value, multiplicity) pairs; pairs beyond memory go to a
    file in `folder`."""
    parts = iter(chunks())
    first, more = next(parts, None), next(parts, None)
    if more is None:  # one chunk (rows in memory, or few): its bounds sorted in memory
        none = np.empty(0, dtype=np.int64)
        starts, stops = (SortedBounds(none if first is None else first[i], len(ends)) for i in (1, 2))
    else:
        firsts = ends.chunk_firsts()
        starts, stops = BoundFiles(firsts, folder), BoundFiles(firsts, folder)
        for _, a, b in chunks():
            starts.add(a)
            stops.add(b)
        starts.done()
        stops.done()
    out = WeightedValues(folder)
    try:
        prev, base = None, 0  # last end of the previous chunk, global index of this chunk's first step
        for k, chunk in enumerate(ends.chunks()):
            seq = chunk if prev is None else np.concatenate(([prev], chunk))
            lo = base - (prev is not None)  # global index of the step whose gap is seq[1] - seq[0]
            gaps = np.diff(seq)
            hi = lo + len(gaps)
            mult = _open_runs(starts, stops, k, lo, hi)
            keep = (mult > 0) & np.isfinite(gaps)
            out.add(gaps[keep], mult[keep])
            prev, base = chunk[-1], base + len(chunk)
    finally:
        starts.close()
        stops.close()
    for counts, a, b in chunks():
        _between_runs(counts, a, b, ends, out)
    return out


def _open_runs(starts, stops, k: int, lo: int, hi: int) -> np.ndarray:
    """For each step i in [lo, hi): the runs open at its end (start <= i < stop). Bounds
    sorted in memory: the two counts' difference summed once (each cumulative count is a
    pass over the chunk's steps)."""
    if type(starts) is SortedBounds and starts.sorted is not None and stops.sorted is not None:
        a, opened = starts.counts(lo, hi)
        b, closed = stops.counts(lo, hi)
        opened -= closed
        np.cumsum(opened, out=opened)
        opened += a - b
        return opened
    return starts.upto(k, lo, hi) - stops.upto(k, lo, hi)


def _between_runs(counts: np.ndarray, starts: np.ndarray, stops: np.ndarray, ends: StepEnds,
                  out: WeightedValues) -> None:
    """The gaps from each run's end to the next run of the same request."""
    later = np.ones(len(starts), dtype=bool)  # runs that follow another run of the same request
    later[(np.cumsum(counts) - counts)[counts > 0]] = False
    idx = np.flatnonzero(later)
    if len(idx):
        between = ends[starts[idx]] - ends[stops[idx - 1]]
        between = between[np.isfinite(between)]
        out.add(between, np.ones(len(between), dtype=np.int64))


def itl_stats(chunks: RunChunks, ends: StepEnds, folder: str | None = None) -> dict[str, float | None]:
    """`stats` of the inter-token gaps (exact percentiles; the mean from an exact sum)."""
    values = itl_values(chunks, ends, folder)
    try:
        return values_stats(values)
    finally:
        values.close()


def values_stats(values: WeightedValues) -> dict[str, float | None]:
    """The summary's `itl_s` figures of the gaps in `values` (itl_stream.py reduces them too)."""
    if values.total_weight == 0:
        return {"mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    p50, p90, p99 = values.percentiles((50, 90, 99))
    return {"mean": values.mean(), "p50": p50, "p90": p90, "p99": p99, "max": values.max}
