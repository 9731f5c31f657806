"""Inter-token gaps reduced while the run goes, in the step log's helper process.

itl.py finds every gap after the run, from the finished token runs and the step ends. The
helper process (step_helper.py) already receives each replica's step ends as the run goes;
this joins them with the token runs of the requests that have ended, sent down the same pipe,
so the gaps are reduced on the second core and the loop's process only reads the result.

Per replica, the gap at step i (ends[i + 1] - ends[i]) counts the runs [a, b] with
a <= i < b (a difference array: +1 at a, -1 at b). The count of gap i is final once no run
still to come can start at or below i: the loop's process sends, with the runs, a watermark per
replica (the lowest first step of its live requests' runs, else the steps it has logged), and
the gaps below it are added to a `WeightedValues`. Each gap is added once with its whole
multiplicity, the gaps between two runs of one request one by one, as itl.py adds them; the
sums are exact and the percentiles a selection, so the order of the pairs does not change a
bit. A run that starts below a finished gap (a watermark that was wrong) marks the stream as
invalid, and the summary then computes the gaps after the run as before.
"""

from __future__ import annotations

import numpy as np

from servesim.metrics.exact import WeightedValues


class _Window:
    """Values of steps `done`, `done` + 1, ... of one replica in one array with room to spare:
    appended at the back, dropped at the front, each value copied a bounded number of times
    (a request that lives long holds its replica's watermark, and the window grows meanwhile)."""

    __slots__ = ("_a", "lo", "hi")

    def __init__(self, dtype) -> None:
        self._a = np.zeros(1024, dtype=dtype)
        self.lo = self.hi = 0

    def view(self) -> np.ndarray:
        return self._a[self.lo:self.hi]

    def _room(self, n: int) -> None:
        """Room for `n` values in all: the window moved to the front, in a larger array if need be."""
        a, size = self._a, self.hi - self.lo
        if self.lo + n > len(a):
            b = np.zeros(max(n, 2 * size, 1024), dtype=a.dtype) if n > len(a) // 2 else a
            b[:size] = a[self.lo:self.hi]
            b[size:] = 0
            self._a, self.lo, self.hi = b, 0, size

    def extend(self, values: np.ndarray) -> None:
        self._room(self.hi - self.lo + len(values))
        self._a[self.hi:self.hi + len(values)] = values
        self.hi += len(values)

    def cover(self, n: int) -> np.ndarray:
        """The window, made at least `n` values long (new values 0), as a view."""
        if self.hi - self.lo < n:
            self._room(n)
            self.hi = self.lo + n
        return self.view()

    def drop(self, n: int) -> None:
        """Forget the first `n` values (fewer if the window is shorter)."""
        self.lo = min(self.lo + n, self.hi)


class ITLStream:
    """Every replica's inter-token gaps, finalised below each replica's watermark."""

    def __init__(self, num_replicas: int, folder: str | None = None) -> None:
        self.values = WeightedValues(folder)
        self.valid = True  # False: a run came below a finished gap; the summary reduces after the run
        n = num_replicas
        self._done = [0] * n  # gaps i < done are in `values`
        self._ends = [_Window(np.float64) for _ in range(n)]  # step ends from step `done` on
        self._diff = [_Window(np.int64) for _ in range(n)]  # run bounds from step `done` on (+1 start, -1 end)
        self._open = [0] * n  # runs holding the gap at step done - 1 (and so, so far, at done)
        # gaps between two runs of one request not added yet: [replica, last step of a run, first
        # step of the next, that last step's end once it is here (its step may be trimmed before)]
        self._between: list[list] = []

    def add_ends(self, replica: int, ends: np.ndarray) -> None:
        """The next steps' end times of `replica` (its step buffers, in order)."""
        self._ends[replica].extend(ends)

    def add_runs(self, bounds: np.ndarray, replicas: np.ndarray, counts: np.ndarray) -> None:
        """Token runs of ended requests: flat (start, end) bounds (replica-local steps), the
        replica of each run and the runs of each request (in order)."""
        if not len(replicas) or not self.valid:
            return
        starts, stops = bounds[0::2], bounds[1::2]
        done = np.asarray(self._done, dtype=np.int64)[replicas]
        if (starts < done).any():
            self.valid = False
            return
        for r in np.unique(replicas).tolist():
            mine = replicas == r
            a, b = starts[mine] - self._done[r], stops[mine] - self._done[r]
            diff = self._diff[r].cover(int(b.max()) + 1)
            np.add.at(diff, a, 1)
            np.add.at(diff, b, -1)
        later = np.ones(len(starts), dtype=bool)  # runs that follow another run of the same request
        later[(np.cumsum(counts) - counts)[counts > 0]] = False
        idx = np.flatnonzero(later)
        self._between += [[r, p, s, None] for r, p, s in
                          zip(replicas[idx].tolist(), stops[idx - 1].tolist(), starts[idx].tolist())]

    def advance(self, watermarks: list[int] | None) -> None:
        """Add the gaps below each replica's watermark (None: every gap, the run is over) and
        between runs whose step ends are here (in one `add`: with a hundred replicas, one a
        replica would make the pairs' file many small chunks, each read once per selection pass)."""
        if not self.valid:
            return
        gaps_of, weights_of = [], []
        for r, window in enumerate(self._ends):
            ends = window.view()
            upto = len(ends) - 1 if watermarks is None else min(watermarks[r] - self._done[r], len(ends) - 1)
            if upto <= 0:
                continue
            gaps = np.diff(ends[:upto + 1])
            diff = self._diff[r].view()
            mult = np.cumsum(diff[:upto]) + self._open[r]
            if len(mult) < upto:  # (no run bound that far: the count stays)
                mult = np.concatenate((mult, np.full(upto - len(mult), mult[-1] if len(mult) else self._open[r])))
            keep = (mult > 0) & np.isfinite(gaps)
            gaps_of.append(gaps[keep])
            weights_of.append(mult[keep])
            self._resolve_between(r, self._done[r] + len(ends), gaps_of, weights_of)
            self._open[r] = int(mult[-1])
            window.drop(upto)
            self._diff[r].drop(upto)
            self._done[r] += upto
        if watermarks is None:
            for r, window in enumerate(self._ends):
                self._resolve_between(r, self._done[r] + window.hi - window.lo, gaps_of, weights_of)
        if gaps_of:
            self.values.add(np.concatenate(gaps_of), np.concatenate(weights_of))

    def _resolve_between(self, replica: int, received: int, gaps_of: list, weights_of: list) -> None:
        """Read the ends of the between-run gaps on `replica` whose steps (< `received`) are
        here, before they are trimmed; the gaps whose both ends are read go to the lists."""
        if not self._between:
            return
        ends, done = self._ends[replica].view(), self._done[replica]
        gaps, left = [], []
        for e in self._between:
            r, prev, start, prev_s = e
            if r == replica:
                if prev_s is None and prev < received:
                    prev_s = e[3] = ends[prev - done]
                if start < received:
                    gaps.append(ends[start - done] - prev_s)
                    continue
            left.append(e)
        self._between = left
        if gaps:
            between = np.array(gaps, dtype=np.float64)
            between = between[np.isfinite(between)]
            gaps_of.append(between)
            weights_of.append(np.ones(len(between), dtype=np.int64))

    def close(self) -> None:
        self.values.close()
