"""Requests that join a stretch in flight (`Stretch.join`) and the KV block counts a stretch
with joins needs: the part of `Stretch` that arrivals joining it add (`replica/stretch_join.py`
decides when they may). A mixin of `Stretch`, which holds the state (`joins`, `join_blocks`,
`_need_at`: see `Stretch._no_joins`)."""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections import Counter
from itertools import accumulate, repeat
from operator import sub
from typing import Any

from servesim.metrics.recorder import BatchRuns
from servesim.replica.stretch_chunks import DecodeForms


class StretchJoins:
    """`Stretch`'s methods for joins and block counts (no state of its own)."""

    __slots__ = ()

    def _batch_runs_joined(self) -> BatchRuns:
        """`batch_runs` with joins: the batch also grows at each join step."""
        k, rem = self.k, self._sorted_rem
        starts = [j for j, _, _ in self.joins]  # (in join order: non-decreasing, as `rem` is sorted)
        # the steps before k where the batch changes, with the requests that join and leave at
        # each (counted in C from slices of the two sorted lists: a stretch holds a few dozen of each)
        joins, leaves = Counter(starts[:bisect_left(starts, k)]), Counter(rem[:bisect_left(rem, k)])
        marks = {0, *joins, *leaves}
        if self.stalls:  # (a prompt-only step runs its prompts alone: a run of its own)
            marks.update(j for s, _ in self.stalls if s < k for j in (s, s + 1) if j < k)
        marks = sorted(marks)
        # the batch at each mark: those that ran from step 0, plus the joins, less the departures,
        # at or before it (summed in order over the marks, which hold every join and departure
        # before k: no search of the two lists per mark)
        sizes = list(accumulate(map(sub, map(joins.get, marks, repeat(0)), map(leaves.get, marks, repeat(0))),
                                initial=len(self.reqs) - len(starts)))
        del sizes[0]
        for s, _ in self.stalls:
            if s < k:
                sizes[bisect_left(marks, s)] = joins.get(s, 0)
        marks.append(k)
        return BatchRuns(sizes, list(map(sub, marks[1:], marks)))

    def blocks_needed(self, steps: int, block_size: int) -> int:
        """KV blocks the first `steps` steps add to the blocks held at step 0 (the decodes'
        growth; the joined prompts' blocks are `join_blocks`). Counted on from the last count
        over the requests that may still grow (a long stretch that requests joined and left
        holds many that no longer do)."""
        at, need, live = self._need_at
        first_new, remaining = self.first_new, self.remaining
        if steps < at:
            base = self._stall_need
            if base is None or steps < base[0]:  # (from the start; with the growth before stalls)
                return (sum(_growth(f, 0, min(steps, r), block_size) for f, r in zip(first_new, remaining))
                        + sum(_growth(f, 0, min(steps, s), block_size) for _, f, s in self.grown))
            at, need, live = base  # (counted on from the last stall, not kept)
            return need + sum(_growth(first_new[i], at, min(steps, remaining[i]), block_size) for i in live)
        # (`_growth` written out, and the requests still growing after `steps` listed in the
        # same pass: under overload a stretch holds hundreds, and this runs at each limit)
        still = []
        for i in live:
            r, f = remaining[i], first_new[i]
            if r > steps:
                hi = steps
                still.append(i)
            else:
                hi = r
            if f < at:
                f += (at - f + block_size - 1) // block_size * block_size
            if f < hi:
                need += (hi - 1 - f) // block_size + 1
        self._need_at = (steps, need, still)
        return need

    def blocks_bound(self, steps: int, block_size: int) -> int:
        """An upper bound of `blocks_needed(steps)` in O(1): the last count plus a block per
        `block_size` steps since for each request that may still grow (a request gets one
        block every `block_size` steps at most)."""
        at, need, live = self._need_at
        if steps <= at:
            return need
        return need + len(live) * ((steps - at - 1) // block_size + 1)

    def join(self, joins: list[tuple[Any, int]], first_new: list[int], blocks: int, step_s: float,
             forms: "DecodeForms | None", block_size: int, cached: int = 0) -> None:
        """Requests admitted whole at the boundary after the stretch's last step (`joins`:
        (request, prompt tokens), in admission order; their prompts took `blocks` blocks): the
        next step, s = k, runs the decodes still running and those prompts (`step_s` long,
        priced by the caller), and from s + 1 on they decode with the rest. In the stretch's
        frame a request that joined at s with an n-token prompt decodes at step j > s with
        n + (j - s - 1) tokens in KV, so ctx1 = n - s, and emits its last token in step
        s + output_len - 1, so remaining = s + output_len: the pricing only reads steps after s,
        where both hold as for the others. `first_new`: the first step that needs one more
        block for each (`KVCacheManager.first_new_block_steps` with that ctx1). `forms`: the
        affine decode forms covering the grown batch. `cached`: prompt tokens each joiner hit in
        the prefix cache (its prompt then computes n tokens beside them: a conversation's next
        turn, `replica/keyed_join.py`), so its context at step s + 1 is n + cached."""
        s = self.k
        in_sync = self._f is not None and self._priced == s  # the scalar state is step s's
        ctx_sum, active = self._ctx_sum, self._active
        self.truncate(s)
        self._append([self.end_s + step_s])
        if self.reqs is self.decodes:  # (shared while only decodes ran)
            self.reqs = list(self.reqs)
        reqs, ctx1, remaining, rem = self.reqs, self.ctx1, self.remaining, self._sorted_rem
        for (req, n), f in zip(joins, first_new):
            r = s + req.output_len
            self.joins.append((s, req, n))
            reqs.append(req)
            ctx1.append(n + cached - s)
            remaining.append(r)
            insort(rem, r)  # (after the departed ones: r > s)
            self.first_new.append(f)
            self._ctx_total += n + cached - s
            ctx_sum += n + cached  # (its context at step s + 1; the others' grow by one below)
        self.kmax = rem[-1]
        self.join_blocks += blocks
        at, need, live = self._need_at  # (the joiners grow from step s + 1 on: count what they grow before `at`)
        for i in range(len(reqs) - len(joins), len(reqs)):
            need += _growth(self.first_new[i], 0, min(at, remaining[i]), block_size)
            live.append(i)
        self._need_at = (at, need, live)
        self._forms = forms
        self._prefix_sums = self._order = self._step1_s = None  # (rebuilt from the lists when needed)
        self.final = False
        if in_sync:  # the scalar loop goes on from step s + 1 without a pass over the batch
            self._ctx_sum, self._active = ctx_sum + active, active + len(joins)
            self._f = self._decode_fn(self._active)
            if self._p < len(rem) and rem[self._p] == s + 1:
                self._leave(s + 1)
        else:
            self._f = None  # (`_sync` rebuilds it from the lists)

    def stall(self, joins: list[tuple[Any, int]], first_new: list[int], blocks: int, step_s: float,
              forms: "DecodeForms | None", block_size: int, cached: int = 0) -> None:
        """`join` for a prefill-first policy (`Scheduler.stalls_decodes`): step s = k runs the
        admitted prompts alone (`step_s` long) and the requests running stall in it; from
        s + 1 on everyone decodes. In the stretch's frame each request running at s moves one
        step later: remaining + 1 and ctx1 - 1 (the same contexts in the same order, from s + 1
        on, and its last token one step later), its first new block step after s one later, and
        the blocks it grew before s kept in `grown` (a request's growth is regular only between
        stalls). Everything priced, limited and read later follows from those lists; what counts
        tokens or steps (`tokens_before`, `batch_runs`, the apply) reads `stalls`. `cached`: as
        for `join` (a next turn's prompt hit in the prefix cache: `replica/keyed_join.py`)."""
        s, bs = self.k, block_size
        remaining, ctx1, first = self.remaining, self.ctx1, self.first_new
        at, need, live = self._need_at
        if at > s:  # (counted past s, then cut back: from the count after the last stall, or from the start)
            base = self._stall_need
            if base is not None and base[0] <= s:
                at, need, live = base
            else:
                at, need, live = s, self.blocks_needed(s, bs), [i for i, r in enumerate(remaining) if r > s]
        # One pass over the requests that may grow from `at` on: the blocks they grow in
        # [at, s) (`blocks_needed(s)`; nothing grows in step s), and those running at s stall
        rem = self._sorted_rem
        for p in range(bisect_right(rem, s), len(rem)):
            rem[p] += 1
        grown = self.grown
        running = []
        for i in live:
            f, r = first[i], remaining[i]
            if f < s:
                g = f if f >= at else f + (at - f + bs - 1) // bs * bs  # (its first growth step from `at`)
                hi = r if r < s else s
                if g < hi:
                    need += (hi - 1 - g) // bs + 1
            if r > s:  # (running at s: it stalls)
                remaining[i] = r + 1
                ctx1[i] -= 1
                if f < s:
                    grown.append((i, f, s))
                    f += (s - f + bs - 1) // bs * bs  # its first growth step at or after s
                first[i] = f + 1
                running.append(i)
        live = running
        self._ctx_total -= len(live)
        if self._f is not None and self._priced == s:
            self._ctx_sum -= len(live)  # (the scalar state of step s in the new frame: `join` adds a step to each)
        self.stalls.append((s, len(live)))
        self._need_at = (s + 1, need, live)
        if len(joins) == 1 and self._f and self._priced == s and type(self).join is StretchJoins.join:
            # the usual stall (one arrival, the scalar state step s's, which `stall_step_s`
            # brought it to): `join`'s state by the lean path a plain join takes
            (req, n), = joins
            self.join_one(req, n, first_new[0], blocks, step_s, forms, bs, cached)
        else:
            self.join(joins, first_new, blocks, step_s, forms, bs, cached)
        self._stall_need = self._need_at  # (the count just after the last stall: later counts start there)

    def join_one(self, req: Any, n: int, first_new: int, blocks: int, step_s: float, forms: "DecodeForms | None",
                 block_size: int, cached: int = 0) -> None:
        """`join([(req, n)], [first_new], ...)` while the scalar state is step s's (`_priced ==
        k`, `_f` set): the same state, without the truncation (nothing is priced past s), the
        loops or the list arguments (an arrival joins at every event of a busy replica)."""
        s = self.k
        t = self.end_s + step_s
        ends = self._ends
        if type(ends) is list:
            del ends[s:]  # (what a cut dropped)
            ends.append(t)
        elif s < len(ends):
            self._endv[s] = t  # (a stretch priced ahead by numpy and cut: its array has the room)
        else:
            self._room(1)[0] = t
        self._priced = self.k = s + 1
        self.end_s = t  # (`_take`: the float just stored)
        if self.reqs is self.decodes:  # (shared while only decodes ran)
            self.reqs = list(self.reqs)
        r = s + req.output_len
        self.joins.append((s, req, n))
        self.reqs.append(req)
        self.ctx1.append(n + cached - s)
        self.remaining.append(r)
        rem = self._sorted_rem
        insort(rem, r)  # (after the departed ones: r > s)
        self.first_new.append(first_new)
        self._ctx_total += n + cached - s
        self.kmax = rem[-1]
        self.join_blocks += blocks
        at, need, live = self._need_at  # (it grows from step s + 1 on: count what it grows before `at`)
        if first_new < at:  # (else `_growth` is 0: it needs no block before `at`)
            need += _growth(first_new, 0, at if at < r else r, block_size)
        live.append(len(self.reqs) - 1)
        self._need_at = (at, need, live)
        self._forms = forms
        self._prefix_sums = self._order = self._step1_s = None  # (rebuilt from the lists when needed)
        self.final = False
        active = self._active + 1
        self._ctx_sum += n + cached + active - 1  # (its context at step s + 1; the others' grow by one)
        self._active = active
        self._f = self._decode_fn(active)
        if self._p < len(rem) and rem[self._p] == s + 1:
            self._leave(s + 1)


def _growth(first_new: int, lo: int, hi: int, block_size: int) -> int:
    """Blocks a request gets at steps first_new, first_new + block_size, ... in [lo, hi)."""
    if first_new < lo:
        first_new += (lo - first_new + block_size - 1) // block_size * block_size
    return (hi - 1 - first_new) // block_size + 1 if first_new < hi else 0
