"""LightLLM's future-peak check for one candidate after another (VTC's prefill mini-batch).

`future_peak(contexts, rests)` sorts the running requests by remaining output (descending) and
takes max over k of (k x the k-th remaining + the first k contexts). A mini-batch asks it once
per candidate with the running batch plus that candidate, and under overload the batch holds
about 300 requests: building, sorting and summing it for each candidate was most of VTC's
mini-batch. `PeakItems` sorts the batch once per mini-batch and keeps each k's term with its
prefix maximum and the suffix maximum of the terms shifted one place (a candidate inserted
before them adds its context and moves each one place: term + context + remaining). A
candidate's peak is then three reads at its place in the order; an admitted one is inserted
and the maxima rebuilt before the next check (one pass in numpy per admission instead of a sort
per check).
Integers throughout, so each peak is `future_peak`'s exactly (`test_peak_items_equal_future_peak`).

A small batch (most mini-batches below overload: 2-30 running) pays more for the arrays'
calls than for the arithmetic: `peak_items` gives it `FewPeakItems`, plain lists on which a
candidate's peak is one pass in C-level iterators and an admission an insert (3-4x less time
per mini-batch up to 30 running; the arrays win from about 60).

Neither is built while a cheaper bound settles the check (`VTCScheduler._prefill_mini_batch`):
with the remaining outputs r_1 >= r_2 >= ..., k x r_k <= r_1 + ... + r_k, so the k-th term is at
most the sum of the first k requests' context + remaining; each of those sums is the request's
prompt plus its reserved output (> 0), so the peak is at most their sum over the whole batch.
When that sum fits in the blocks, so does the peak.
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate, chain, count
from operator import add, mul

import numpy as np

FEW = 48  # running requests below which `peak_items` keeps plain lists


def peak_items(contexts: list[int], rests: list[int]) -> PeakItems | FewPeakItems:
    """The future-peak check of the running requests (`PeakItems`' interface), in the form
    that is cheaper at the batch's size."""
    return FewPeakItems(contexts, rests) if len(contexts) < FEW else PeakItems(contexts, rests)


class FewPeakItems:
    """`PeakItems` for a small batch: the same order in lists, each peak summed afresh."""

    def __init__(self, contexts: list[int], rests: list[int]) -> None:
        order = sorted(range(len(rests)), key=lambda i: -rests[i])  # (stable, as `PeakItems`' argsort)
        self._c = [contexts[i] for i in order]
        self._r = [rests[i] for i in order]
        self._neg_r = [-r for r in self._r]  # (ascending, for `bisect`)

    def __len__(self) -> int:
        return len(self._c)

    def peak_with(self, context: int, rest: int) -> int:
        """`future_peak` of the batch and one more request (context, rest), placed as
        `PeakItems._place` places it."""
        p = bisect_right(self._neg_r, -rest)
        c, r = self._c, self._r
        csum = accumulate(chain(c[:p], (context,), c[p:]))
        return max(0, max(map(add, csum, map(mul, chain(r[:p], (rest,), r[p:]), count(1)))))

    def add(self, context: int, rest: int) -> None:
        """The request joins the batch (at its place in the order)."""
        p = bisect_right(self._neg_r, -rest)
        self._c.insert(p, context)
        self._r.insert(p, rest)
        self._neg_r.insert(p, -rest)


class PeakItems:
    """The running requests' (context, remaining output), sorted by remaining output, for
    `future_peak` of the batch with one more request.

    Held in buffers with room to grow, so an admission shifts the tail one place in place
    rather than concatenating new arrays; the maxima are rebuilt only when a peak is asked for
    (the mini-batch's last admission asks none). About 25 us an admission at 300 running,
    where concatenating and rebuilding at once took 33."""

    def __init__(self, contexts: list[int], rests: list[int]) -> None:
        c, r = np.asarray(contexts, dtype=np.int64), np.asarray(rests, dtype=np.int64)
        order = np.argsort(-r, kind="stable")
        n = len(c)
        self._n = 0
        self._c = self._r = self._neg_r = np.empty(0, dtype=np.int64)
        self._room(2 * n + 16)
        self._n = n
        self._c[:n] = c[order]
        self._r[:n] = r[order]
        np.negative(self._r[:n], out=self._neg_r[:n])  # (remaining negated: ascending, for `searchsorted`)
        self._built = False

    def _room(self, cap: int) -> None:
        """Buffers of `cap` entries, the first `_n` kept (contexts, remaining, remaining negated)."""
        n = self._n
        for name in ("_c", "_r", "_neg_r"):
            buf = np.empty(cap, dtype=np.int64)
            buf[:n] = getattr(self, name)[:n]
            setattr(self, name, buf)
        self._k = np.arange(1, cap + 1, dtype=np.int64)  # (k + 1 for the k-th term)

    def __len__(self) -> int:
        return self._n

    def _build(self) -> None:
        n = self._n
        c, rest = self._c[:n], self._r[:n]
        self._csum = np.cumsum(c)
        terms = rest * self._k[:n]
        terms += self._csum
        self._pre = np.maximum.accumulate(terms) if n else terms  # max of terms[:k + 1]
        terms += rest  # each term when a request sorts before it (plus that one's context)
        self._suf = np.maximum.accumulate(terms[::-1])[::-1] if n else terms  # max of shifted[k:]
        self._built = True

    def _place(self, rest: int) -> int:
        """Where a request with `rest` sorts: after every one with at least as much remaining
        (a stable sort puts the latest of equal ones last)."""
        return int(self._neg_r[:self._n].searchsorted(-rest, side="right"))

    def peak_with(self, context: int, rest: int) -> int:
        """`future_peak` of the batch and one more request (context, rest)."""
        if not self._built:
            self._build()
        p = self._place(rest)
        best = context + rest * (p + 1) + (int(self._csum[p - 1]) if p else 0)
        if p:
            best = max(best, int(self._pre[p - 1]))
        if p < self._n:
            best = max(best, int(self._suf[p]) + context)
        return max(0, best)

    def add(self, context: int, rest: int) -> None:
        """The request joins the batch (at its place in the order)."""
        p = self._place(rest)
        n = self._n
        if n == len(self._c):
            self._room(2 * n + 16)
        for buf, value in ((self._c, context), (self._r, rest), (self._neg_r, -rest)):
            buf[p + 1:n + 1] = buf[p:n]  # (numpy copies overlapping slices as if through a temporary)
            buf[p] = value
        self._n = n + 1
        self._built = False
