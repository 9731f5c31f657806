"""The KV blocks a stretch's decodes add, counted forward step by step (admission stretches).

`Stretch.blocks_needed` sums each request's growth over the requests that may still grow: a
pass over the batch per call. An admission stretch (`replica/admission_stretch.py`) asks at
every departure, a step or two apart under overload, with blocks so scarce that the O(1)
bound never settles it: with some 300 requests running that pass was most of the run. Here
the count walks forward instead: request i gets a block at steps f, f + block_size, ... below
r (its `first_new` and `remaining`), so at step j the blocks added are the requests running
with f <= j and f = j modulo block_size: counts by residue, changed where a request starts
growing (step f) or leaves (step r). Work per step walked, plus one event per request.
"""

from __future__ import annotations

from bisect import insort


class GrowthCount:
    """blocks_needed(steps) = blocks added by steps 1 .. steps - 1, for queries in any order
    (a walk forward from the furthest step counted; earlier steps are looked up)."""

    __slots__ = ("bs", "counts", "starts", "stops", "_p", "_q", "needs")

    def __init__(self, first_new: list[int], remaining: list[int], block_size: int) -> None:
        bs = self.bs = block_size
        self.counts = [0] * bs  # requests growing now, by residue (f % block_size)
        # the steps f at which requests start growing, and r * block_size + (f % block_size) at
        # which they stop (a request's residue is its f's), each in increasing order
        self.starts = sorted([f for f, r in zip(first_new, remaining) if f < r])
        self.stops = sorted([r * bs + f % bs for f, r in zip(first_new, remaining) if f < r])
        self._p = self._q = 0  # the next start and stop to apply
        self.needs = [0, 0]  # needs[j]: blocks added by steps 1 .. j - 1 (counted up to len - 1)

    def add(self, first_new: list[int], remaining: list[int]) -> bool:
        """Requests that grow from step f (>= the steps counted so far) until step r; False
        if one would have grown in a step already counted (the caller counts anew)."""
        bs, at = self.bs, len(self.needs) - 1
        for f, r in zip(first_new, remaining):
            if f < r:
                if f < at:
                    return False
                insort(self.starts, f, self._p)
                insort(self.stops, r * bs + f % bs, self._q)
        return True

    def blocks_needed(self, steps: int) -> int:
        needs = self.needs
        at = len(needs) - 1  # the step the walk counts next
        if steps <= at:
            return needs[steps]
        counts, starts, stops, bs = self.counts, self.starts, self.stops, self.bs
        p, q, ns, nq = self._p, self._q, len(starts), len(stops)
        need = needs[at]
        for j in range(at, steps):
            while p < ns and starts[p] == j:
                counts[j % bs] += 1
                p += 1
            while q < nq and stops[q] < (j + 1) * bs:  # (a stop at step j: no block from j on)
                counts[stops[q] % bs] -= 1
                q += 1
            need += counts[j % bs]
            needs.append(need)
        self._p, self._q = p, q
        return need
