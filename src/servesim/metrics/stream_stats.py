"""`summary.stats` of a column read a chunk of rows at a time, with the same bytes.

A summary statistic over a million requests should not need the million values in memory at
once. `StreamStats` takes a column's values chunk by chunk (the finite ones, in row order): up
to `memory_values` of them stay in memory and the result is `stats` of their concatenation;
beyond that they go to a file, the percentiles come from `WeightedValues` (exact selection
over the float bits, metrics/exact.py) and the mean from `pairwise_sum`, which adds the file
in exactly the order numpy's `sum` adds an array of that length. So a spilled column gives the
very bytes of the in-memory one, and memory holds a chunk, not the column.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from servesim.metrics.exact import WeightedValues

def weighted_percentiles(values: np.ndarray, weights: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """np.percentile(np.repeat(values, weights), qs) without materialising the repeat."""
    keep = weights > 0
    if not keep.all():  # (no copy when nothing is dropped: the ITL columns have a value per step)
        values, weights = values[keep], weights[keep]
    del keep
    if len(values) == 0:
        return [float("nan")] * len(qs)
    order = np.argsort(values)  # ties hold equal values: their order does not matter
    v, c = values[order], weights[order]
    del order
    np.cumsum(c, out=c)
    n = int(c[-1])
    out = []
    for q in qs:
        pos = q / 100.0 * (n - 1)
        lo = int(np.floor(pos))
        hi = min(lo + 1, n - 1)
        a = v[np.searchsorted(c, lo + 1)]
        b = v[np.searchsorted(c, hi + 1)]
        out.append(float(a + (b - a) * (pos - lo)))
    return out


def stats(values: np.ndarray, weights: np.ndarray | None = None) -> dict[str, float | None]:
    """mean, p50, p90, p99 and max of the finite values (weights: multiplicities)."""
    if weights is None:
        weights = np.ones(len(values), dtype=np.int64)
    ok = np.isfinite(values) & (weights > 0)
    if not ok.all():
        values, weights = values[ok], weights[ok]
    del ok
    if len(values) == 0:
        return {"mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    p50, p90, p99 = weighted_percentiles(values, weights, (50, 90, 99))
    # not np.dot: BLAS splits long dot products over its threads, so the last bits would depend
    # on the machine's core count; numpy's pairwise sum has one fixed order everywhere
    mean = float((values * weights).sum() / weights.sum())
    return {"mean": mean, "p50": p50, "p90": p90, "p99": p99, "max": float(values.max())}



#: Values summed by one numpy call in `pairwise_sum` (a subtree of numpy's pairwise sum)
LEAF = 1 << 16


def pairwise_sum(read, n: int) -> np.float64:
    """`a.sum()` of a float64 array `a` of length `n` read by `read(lo, hi)` -> a[lo:hi].

    numpy sums a contiguous float64 array pairwise: a block of at most 128 values in eight
    interleaved partial sums; a longer one split at half its length rounded down to a multiple
    of 8, each half summed so and the two added. A subtree is the same sum of its own slice,
    so the tree is walked down to slices of at most LEAF values, which numpy sums."""
    if n <= LEAF:
        return np.add.reduce(read(0, n), initial=0.0) if n else np.float64(0.0)

    def node(lo: int, m: int) -> np.float64:
        if m <= LEAF:
            return np.add.reduce(read(lo, lo + m), initial=0.0)
        half = m // 2
        half -= half % 8
        return node(lo, half) + node(lo + half, m - half)

    return node(0, n)


class StreamValues:
    """Float64 values added a chunk at a time, in order, for numpy's `mean`, `percentile` and
    `min` of their concatenation, to the bit: up to `memory_values` stay in memory (numpy runs
    on the concatenation); beyond that they go to a file, the mean is `pairwise_sum`'s and a
    percentile interpolates, as numpy does, between the two values `WeightedValues` selects at
    its ranks. For the summary sections that read a value per request."""

    #: values held in memory before they go to a file
    memory_values = 1 << 18

    def __init__(self, folder: str | Path | None = None) -> None:
        self._folder = folder
        self._mem: list[np.ndarray] = []
        self._n = 0
        self._min = np.inf
        self._file = None
        self._ranks: WeightedValues | None = None
        self._signed = False  # a negative value (or -0.0): its float bits do not sort as values

    def __len__(self) -> int:
        return self._n

    def add(self, values: np.ndarray) -> None:
        v = np.asarray(values, dtype=np.float64)
        if not len(v):
            return
        self._n += len(v)
        self._min = min(self._min, float(v.min()))
        self._signed = self._signed or bool(np.signbit(v).any())
        if self._file is None and self._n <= self.memory_values:
            self._mem.append(v)
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile(dir=self._folder)
            self._ranks = WeightedValues(self._folder)
            for part in self._mem:
                self._spill(part)
            self._mem = []
        self._spill(v)

    def _spill(self, v: np.ndarray) -> None:
        self._file.write(np.ascontiguousarray(v).data)
        self._ranks.add(v, np.ones(len(v), dtype=np.int64))

    def _read(self, lo: int, hi: int) -> np.ndarray:
        self._file.seek(8 * lo)
        return np.fromfile(self._file, np.float64, hi - lo)

    def _whole(self) -> np.ndarray | None:
        """The values as one array when they are that cheap to have (in memory, or signed)."""
        if self._file is None:
            return np.concatenate(self._mem) if self._mem else np.empty(0)
        return self._read(0, self._n) if self._signed else None

    def mean(self) -> float:
        whole = self._whole()
        if whole is not None:
            return float(np.mean(whole))
        return float(pairwise_sum(self._read, self._n) / self._n)

    def min(self) -> float:
        return float(self._min)

    def percentile(self, q: float) -> float:
        """np.percentile of the values at `q` (its default, linear interpolation)."""
        whole = self._whole()
        if whole is not None:
            return float(np.percentile(whole, q))
        pos = q / 100 * (self._n - 1)
        lo = min(int(np.floor(pos)), self._n - 1)
        hi = min(lo + 1, self._n - 1)
        at = self._ranks._select(sorted({lo, hi}))
        a, b, t = at[lo], at[hi], np.float64(pos - lo)
        # numpy's _lerp: from the far end when t >= 0.5 (the same bits, not only the same value)
        return float(b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._ranks.close()
            self._file = None
        self._mem = []


class StreamStats(StreamValues):
    """mean, p50, p90, p99 and max of the finite values added (`stats` of their concatenation)."""

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        super().add(values[np.isfinite(values)])

    def result(self) -> dict[str, float | None]:
        try:
            whole = self._whole()
            if whole is not None:
                return stats(whole)
            p50, p90, p99 = self._ranks.percentiles((50, 90, 99))
            mean = float(pairwise_sum(self._read, self._n) / self._n)
            return {"mean": mean, "p50": p50, "p90": p90, "p99": p99, "max": float(self._ranks.max)}
        finally:
            self.close()
