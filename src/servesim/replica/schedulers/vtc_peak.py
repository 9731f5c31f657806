"""LightLLM's future-peak check for one candidate after another (VTC's prefill mini-batch).

`future_peak(contexts, rests)` sorts the running requests by remaining output (descending) and
takes max over k of (k x the k-th remaining + the first k contexts). A mini-batch asks it once
per candidate with the running batch plus that candidate, and under overload the batch holds
about 300 requests: building, sorting and summing it for each candidate was most of VTC's
mini-batch. `PeakItems` sorts the batch once per mini-batch and keeps each k's term with its
prefix maximum and the suffix maximum of the terms shifted one place (a candidate inserted
before them adds its context and moves each one place: term + context + remaining). A
candidate's peak is then three reads at its place in the order; an admitted one is inserted
and the maxima rebuilt (one pass in numpy per admission instead of a sort per check).
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
    `future_peak` of the batch with one more request."""

    def __init__(self, contexts: list[int], rests: list[int]) -> None:
        c, r = np.asarray(contexts, dtype=np.int64), np.asarray(rests, dtype=np.int64)
        order = np.argsort(-r, kind="stable")
        self._c, self._neg_r = c[order], -r[order]  # (remaining negated: ascending, for `searchsorted`)
        self._build()

    def __len__(self) -> int:
        return len(self._c)

    def _build(self) -> None:
        rest = -self._neg_r
        self._csum = np.cumsum(self._c)
        terms = self._csum + rest * np.arange(1, len(rest) + 1, dtype=np.int64)
        self._pre = np.maximum.accumulate(terms) if len(terms) else terms  # max of terms[:k + 1]
        shifted = terms + rest  # each term when a request sorts before it (plus that one's context)
        self._suf = np.maximum.accumulate(shifted[::-1])[::-1] if len(terms) else terms  # max of shifted[k:]

    def _place(self, rest: int) -> int:
        """Where a request with `rest` sorts: after every one with at least as much remaining
        (a stable sort puts the latest of equal ones last)."""
        return int(np.searchsorted(self._neg_r, -rest, side="right"))

    def peak_with(self, context: int, rest: int) -> int:
        """`future_peak` of the batch and one more request (context, rest)."""
        p = self._place(rest)
        best = context + rest * (p + 1) + (int(self._csum[p - 1]) if p else 0)
        if p:
            best = max(best, int(self._pre[p - 1]))
        if p < len(self._c):
            best = max(best, int(self._suf[p]) + context)
        return max(0, best)

    def add(self, context: int, rest: int) -> None:
        """The request joins the batch (at its place in the order)."""
        p = self._place(rest)
        c, neg_r = self._c, self._neg_r  # (`concatenate`: `np.insert` costs several times more)
        self._c = np.concatenate((c[:p], (context,), c[p:]))
        self._neg_r = np.concatenate((neg_r[:p], (-rest,), neg_r[p:]))
        self._build()
