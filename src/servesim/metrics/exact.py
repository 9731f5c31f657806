"""Reductions whose result does not depend on how the data was chunked.

A run's step log is reduced as it arrives (in chunks) or all at once (small runs, tests);
both must give the same bytes. `ExactSum` adds float64 values exactly (rounded once, when
read), so any order or chunking gives the same sum. `WeightedValues` holds (value, weight)
pairs, in memory up to a limit and in a temporary file beyond it, and finds exact weighted
percentiles (numpy's linear interpolation) from histograms over the values' float bits: held
in memory, one histogram finds each wanted rank's bucket and the pairs in those buckets are
sorted; spilled, histograms narrow the values around each rank pass by pass (a pass reads the
file) until few are left to sort, and the first histogram (by their top `_COARSE` bits) is kept
as the pairs come, so the search after the run starts one pass further.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

_BINS = 1 << 12  # a float64's sign and exponent bits: values in one bin share sign and exponent
_LOW = 26  # mantissa bits in a value's low part (the high part keeps the other 27)
_HIGH_MASK = np.uint64((1 << 64) - (1 << _LOW))
_CHUNK = 1 << 16  # values summed per bincount (each bin's partial sums stay far below 2^53 units: exact)
# Consecutive values are added into different copies of the bins (lanes): values of one
# magnitude fall in one bin, and a long run of additions to one accumulator, each waiting for
# the previous, made numpy's bincount ~20 times slower on arrays beyond the CPU caches. A
# step log's durations (one bin for most of a stretch's steps) still waited on each other
# with 4 lanes: 8 took a tenth off a matrix cell's sums (orca sessions at 8 replicas).
_LANES = 8
_LANE = np.arange(_CHUNK, dtype=np.intp) % _LANES
_E = np.maximum(np.arange(_BINS) & 0x7FF, 1) - 1075  # log2 of the unit in the last place, per bin
_UNIT_LO = _E  # a low part is a multiple of 2^(exponent - 1075) below 2^26 of them
_UNIT_HI = _E + _LOW  # a high part is a multiple of 2^(exponent - 1049) below 2^27 of them
# The histogram `WeightedValues` keeps as spilled pairs come: by the top 24 bits of their patterns
# (sign, exponent and 12 mantissa bits: about the resolution of the search's first pass over
# values of a few binades), over at most `_COARSE_SPAN` consecutive prefixes (values across more
# binades, or near zero and far from it, drop it: the search then makes its first pass as before).
_COARSE = 40  # bits below the kept prefix
_COARSE_SPAN = 1 << 18
_FIRST = 16  # bits resolved by the histogram pass over pairs held in memory


class ExactSum:
    """Sum of finite float64 values, kept exactly as integers per (sign, binary exponent).

    Each value is split, without rounding, into a high part (its low 26 mantissa bits cleared)
    and a low part (the rest). Within one sign and exponent, the high parts are multiples of
    one unit below 2^27 units, the low parts multiples of a 2^26 times smaller unit below 2^26
    of them; so float64 additions of up to 2^26 of them are exact in any order (no partial
    sum reaches 2^53 units), and the bin sums are carried as integer counts of units."""

    def __init__(self) -> None:
        # the bins from `_first` on that values have reached so far (a sum's values share a few
        # exponents: all 4,096 bins are 64 kB a sum, 250 MB for a cluster of 1,000 replicas)
        self._first = 0
        self._hi = np.zeros(0, dtype=np.int64)
        self._lo = np.zeros(0, dtype=np.int64)

    def __getstate__(self) -> tuple:
        # Pickled as the bins in use: the step log's helper sends its reducers back pickled
        used = np.flatnonzero(self._hi | self._lo)
        return used + self._first, self._hi[used], self._lo[used]

    def __setstate__(self, state: tuple) -> None:
        used, hi, lo = state
        self.__init__()
        if len(used):
            self._cover(int(used[0]), int(used[-1]))
            self._hi[used - self._first] = hi
            self._lo[used - self._first] = lo

    def _cover(self, first: int, last: int) -> None:
        """Widen the bins held to include `first`..`last`."""
        if len(self._hi):
            if first >= self._first and last < self._first + len(self._hi):
                return
            first, last = min(first, self._first), max(last, self._first + len(self._hi) - 1)
        hi, lo = np.zeros(last - first + 1, dtype=np.int64), np.zeros(last - first + 1, dtype=np.int64)
        at = self._first - first
        hi[at:at + len(self._hi)] = self._hi
        lo[at:at + len(self._lo)] = self._lo
        self._first, self._hi, self._lo = first, hi, lo

    def add(self, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, dtype=np.float64)
        if not values.any():
            return  # (zeros add nothing: a level that stayed at 0, such as an empty queue)
        for i in range(0, len(values), _CHUNK):
            part = values[i:i + _CHUNK]
            bits = part.view(np.uint64)
            at = (bits >> np.uint64(52)).view(np.int64)  # sign and biased exponent: the bin
            first, last = int(at.min()), int(at.max())
            at -= first
            at *= _LANES
            at += _LANE[:len(part)]  # (bin - first, lane)
            high = (bits & _HIGH_MASK).view(np.float64)
            size = (last - first + 1) * _LANES
            bins = slice(first, last + 1)
            self._cover(first, last)
            held = slice(first - self._first, last + 1 - self._first)
            self._hi[held] += self._units(np.bincount(at, weights=high, minlength=size), _UNIT_HI[bins])
            self._lo[held] += self._units(np.bincount(at, weights=part - high, minlength=size), _UNIT_LO[bins])

    @staticmethod
    def _units(lane_sums: np.ndarray, unit_log2: np.ndarray) -> np.ndarray:
        """Per bin: the exact sum of its lanes, in units of 2^unit_log2 (integers)."""
        return np.ldexp(lane_sums.reshape(-1, _LANES).sum(axis=1), -unit_log2).astype(np.int64)

    def value(self) -> float:
        """The exact sum, rounded once to the nearest float64: an integer count of the smallest
        unit used, divided by its power of two (Python's int division rounds correctly, as a
        Fraction's float does; about 15 times faster than summing Fractions, 0.3 ms a call)."""
        held = np.flatnonzero(self._hi | self._lo)
        counts = self._hi[held].tolist() + self._lo[held].tolist()
        used = held + self._first
        units = _UNIT_HI[used].tolist() + _UNIT_LO[used].tolist()
        low = min(units, default=0)
        total = sum(c << (u - low) for c, u in zip(counts, units))
        return total / (1 << -low) if low < 0 else float(total << low)


def exact_sum(values: np.ndarray) -> float:
    s = ExactSum()
    s.add(values)
    return s.value()


class WeightedValues:
    """Non-negative finite values with integer weights (multiplicities), for exact percentiles.

    Pairs are held as (float bits, weight) in memory until `memory_pairs` are held, then
    every chunk goes to a temporary file (deleted with this object or by `close`)."""

    #: pairs held in memory before spilling
    memory_pairs = 1 << 18
    #: spilled pairs sorted at once in the last pass: more are narrowed by a histogram pass over
    #: the file first (pairs held in memory: `_select_in_memory`)
    pick_pairs = 1 << 12

    def __init__(self, folder: str | Path | None = None) -> None:
        self._folder = folder
        self._mem: list[tuple[np.ndarray, np.ndarray]] = []
        self._num_mem = 0
        self._file = None
        self._lens: list[int] = []
        self.num_pairs = 0
        self.total_weight = 0
        self.sum = ExactSum()  # of value x weight
        self.max = -np.inf
        self._bits_lo, self._bits_hi = (1 << 64) - 1, 0  # the smallest and largest bit patterns held
        # once spilled: weights and pairs by prefix `_coarse_lo` + i of the patterns' top bits (`_COARSE`),
        # None: not kept (in memory, or spread too widely)
        self._coarse: tuple[np.ndarray, np.ndarray] | None = None
        self._coarse_lo = self._coarse_hi = 0  # (the lowest and highest prefix counted)

    def add(self, values: np.ndarray, weights: np.ndarray) -> None:
        if not len(values):
            return
        bits = np.ascontiguousarray(values, dtype=np.float64).view(np.uint64)
        weights = np.ascontiguousarray(weights, dtype=np.int64)
        self.num_pairs += len(values)
        self.total_weight += int(weights.sum())
        self.sum.add(values * weights)
        self.max = max(self.max, float(values.max()))
        self._bits_lo, self._bits_hi = min(self._bits_lo, int(bits.min())), max(self._bits_hi, int(bits.max()))
        if self._file is None and self._num_mem + len(values) <= self.memory_pairs:
            self._mem.append((bits.copy(), weights.copy()))
            self._num_mem += len(values)
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile(dir=self._folder)
            self._coarse = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
            for b, w in self._mem:
                self._write(b, w)
            self._mem, self._num_mem = [], 0
        self._write(bits, weights)

    def _write(self, bits: np.ndarray, weights: np.ndarray) -> None:
        if self._coarse is not None:
            self._count_coarse(bits, weights)
        self._file.write(bits.data)  # (both contiguous: their buffers, no copy)
        self._file.write(weights.data)
        self._lens.append(len(bits))

    def _count_coarse(self, bits: np.ndarray, weights: np.ndarray) -> None:
        """Add spilled pairs to the kept histogram (or drop it, past `_COARSE_SPAN` prefixes)."""
        top = (bits >> np.uint64(_COARSE)).astype(np.int64)
        lo, hi = first, last = int(top.min()), int(top.max())
        hist_w, hist_n = self._coarse
        if len(hist_w):
            lo, hi = min(lo, self._coarse_lo), max(hi, self._coarse_hi)
        if hi - lo >= _COARSE_SPAN:
            self._coarse = None
            return
        self._coarse_hi = hi
        if lo != self._coarse_lo or hi - lo >= len(hist_w):  # (grown to the new span, with room on top)
            size = min(_COARSE_SPAN, 2 * (hi - lo + 1))
            at = self._coarse_lo - lo if len(hist_w) else 0
            hist_w, hist_n = np.zeros(size, dtype=np.int64), np.zeros(size, dtype=np.int64)
            old_w, old_n = self._coarse
            hist_w[at:at + len(old_w)] = old_w[:size - at]  # (the old room on top may not fit: all zeros)
            hist_n[at:at + len(old_n)] = old_n[:size - at]
            self._coarse, self._coarse_lo = (hist_w, hist_n), lo
        top -= first  # (counted over the chunk's own prefixes: a short chunk costs little)
        span = slice(first - lo, last - lo + 1)
        hist_w[span] += np.bincount(top, weights=weights, minlength=last - first + 1).astype(np.int64)
        hist_n[span] += np.bincount(top, minlength=last - first + 1)

    def _chunks(self):
        """The spilled pairs, a chunk at a time, from the file."""
        self._file.seek(0)
        for n in self._lens:
            yield np.fromfile(self._file, np.uint64, n), np.fromfile(self._file, np.int64, n)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._mem = []

    def mean(self) -> float:
        return self.sum.value() / self.total_weight

    def percentiles(self, qs: tuple[float, ...]) -> list[float]:
        """np.percentile(np.repeat(values, weights), qs), exactly."""
        n = self.total_weight
        if n == 0:
            return [float("nan")] * len(qs)
        ranks = []
        for q in qs:
            pos = q / 100.0 * (n - 1)
            lo = int(np.floor(pos))
            ranks.append((pos, lo, min(lo + 1, n - 1)))
        at = self._select(sorted({r for _, lo, hi in ranks for r in (lo, hi)}))
        out = []
        for pos, lo, hi in ranks:
            a, b = at[lo], at[hi]
            out.append(float(a + (b - a) * (pos - lo)))
        return out

    def _select(self, ranks: list[int]) -> dict[int, np.float64]:
        """The value at each 0-based rank of the repeated, sorted values."""
        if self._file is None:
            return self._select_in_memory(ranks)
        # per rank: (prefix of the float bits, bits below the prefix, rank among values with that
        # prefix); every value shares the leading bits its smallest and largest patterns share
        # (as integers, they lie between those two), so the first histogram starts below them
        whole = (self._bits_lo ^ self._bits_hi).bit_length()
        state = {r: (self._bits_lo >> whole, whole, r) for r in ranks}
        count = self.num_pairs
        if self._coarse is not None and whole > _COARSE:  # (the first pass's histogram, kept: its prefixes)
            hist_w, hist_n = self._coarse
            cum = np.cumsum(hist_w)
            count = 0
            for r in ranks:
                b = int(np.searchsorted(cum, r + 1))
                state[r] = (self._coarse_lo + b, _COARSE, r - (int(cum[b - 1]) if b else 0))
                count = max(count, int(hist_n[b]))
        while True:
            groups = sorted({(p, w) for p, w, _ in state.values()})
            if count <= min(self.pick_pairs, self.memory_pairs) or all(w == 0 for _, w in groups):
                return self._pick(state, groups, whole)
            # bits resolved by this pass (fewer at the end): 16, each pass reading the file
            step = {g: min(16, g[1]) for g in groups}
            hists = {g: np.zeros(1 << step[g], dtype=np.int64) for g in groups}
            counts = {g: np.zeros(1 << step[g], dtype=np.int64) for g in groups}
            for bits, weights in self._chunks():
                for g, b, c in _by_prefix(bits, weights, groups, whole):
                    size = 1 << step[g]
                    sub = ((b >> np.uint64(g[1] - step[g])) & np.uint64(size - 1)).astype(np.int64)
                    hists[g] += np.bincount(sub, weights=c, minlength=size).astype(np.int64)
                    counts[g] += np.bincount(sub, minlength=size)
            count = 0
            cums = {g: np.cumsum(h) for g, h in hists.items()}  # (once a group: ranks share them)
            for r, (p, w, k) in state.items():
                cum = cums[(p, w)]
                b = int(np.searchsorted(cum, k + 1))  # first bucket whose cumulative weight passes rank k
                below = int(cum[b - 1]) if b else 0
                state[r] = ((p << step[(p, w)]) | b, w - step[(p, w)], k - below)
                count = max(count, int(counts[(p, w)][b]))

    def _select_in_memory(self, ranks: list[int]) -> dict[int, np.float64]:
        """`_select` for pairs held in memory: one histogram pass over the `_FIRST` bits below
        those every pattern shares finds each rank's bucket, then only the pairs in those
        buckets are sorted (an unstable sort: equal patterns are equal values). The passes of
        the search made a few scans of every pair per rank's group until each group held fewer
        than `pick_pairs`, which ties (a step time repeated through a run) can keep from
        happening: six passes over 88,000 pairs of a speculative run took 7.6 ms."""
        bits, weights = (np.concatenate(part) if len(self._mem) > 1 else part[0] for part in zip(*self._mem))
        whole = (self._bits_lo ^ self._bits_hi).bit_length()
        step = min(_FIRST, whole, len(bits).bit_length())
        bucket = ((bits >> np.uint64(whole - step)) & np.uint64((1 << step) - 1)).astype(np.intp)
        hist = np.bincount(bucket, weights=weights, minlength=1 << step).astype(np.int64)  # (sums below 2^53: exact)
        want = np.array(ranks, dtype=np.int64)
        at = np.searchsorted(np.cumsum(hist), want + 1)  # each rank's bucket
        chosen = np.zeros(1 << step, dtype=bool)
        chosen[at] = True
        kept = chosen[bucket]
        bits, weights = bits[kept], weights[kept]
        order = np.argsort(bits)
        cum = np.cumsum(weights[order])
        # a rank's place among the kept pairs: the weight of the buckets below its own that
        # were not kept is not there
        skipped = np.cumsum(np.where(chosen, 0, hist))
        values = bits[order[np.searchsorted(cum, want - skipped[at] + 1)]].view(np.float64)
        return dict(zip(ranks, values))

    def _pick(self, state: dict, groups: list, whole: int) -> dict[int, np.float64]:
        kept = {g: ([], []) for g in groups}
        for bits, weights in self._chunks():
            for g, b, c in _by_prefix(bits, weights, groups, whole):
                kept[g][0].append(b)
                kept[g][1].append(c)
        out = {}
        for (p, w), (b, c) in kept.items():
            bits, weights = np.concatenate(b), np.concatenate(c)
            order = np.argsort(bits, kind="stable")
            values, cum = bits[order].view(np.float64), np.cumsum(weights[order])
            for r, (p2, w2, k) in state.items():
                if (p2, w2) == (p, w):
                    out[r] = values[np.searchsorted(cum, k + 1)]
        return out


def _by_prefix(bits: np.ndarray, weights: np.ndarray, groups: list[tuple[int, int]], whole: int):
    """(group, its bits, its weights) for each group (prefix, width): the bit patterns whose
    top (64 - width) bits equal the prefix (all of them for a width of at least `whole`, which
    every pattern shares, without a copy; the shift is made once per width, not per group)."""
    shifted: dict[int, np.ndarray] = {}
    for p, w in groups:
        if w >= whole:
            yield (p, w), bits, weights
            continue
        top = shifted.get(w)
        if top is None:
            top = shifted[w] = bits >> np.uint64(w)
        sel = top == np.uint64(p)
        yield (p, w), bits[sel], weights[sel]
