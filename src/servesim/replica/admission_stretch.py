"""Admission stretches: under a waiting queue, a finish admits the queue head inside a stretch.

Under overload the queue is never empty, so a stretch planned after an admission repeated its
batch only up to the first finish: that finish frees KV blocks and a sequence slot, and the
next `schedule` admits the waiting head (vLLM's head-of-line admission). Each finish then cost
a whole cycle: apply the stretch to every running request, finish, schedule them all again,
plan a new stretch. An admission stretch (`AdmitStretch`) runs through finishes instead: it
is priced up to the next departure; at that step boundary the departed requests release their
KV blocks (as stepping frees them at their finish) and the policy says which waiting requests
the next `schedule` admits (`Scheduler.finish_admits`, given the decodes still running and the
blocks stepping has free after their allocations). They join the stretch as arrivals join a
stretch through finishes (`Stretch.join`: their prompt's step priced beside the decodes, then
they decode with the rest), and it is priced on to the next departure. It ends where the
policy's decision is not determined (a prompt the budget would chunk, a request with prefix
keys or preempted before, the sequence cap), where stepping would preempt (the decodes'
blocks do not fit in those free), at a cut (an arrival the policy cannot keep) and when the
queue empties (the next stretch is a plain one through finishes, which arrivals may join).

Blocks: every request here is without prefix keys, so every block freed is plain and enters
the free queue's tail, while allocations pop its head. Whatever the order of pops and plain
pushes, the queue ends the same as long as no pop finds it empty, and stepping's order never
does: so the departed requests are released at their boundary (`KVCacheManager.free_grown`,
their growth in the stretch included), the joiners' prompts allocated there, and the others'
growth when the stretch is applied, after any release left. The free blocks counted on are
exact: those free when it was planned, plus every release, less the prompts and the growth.

A prompt the budget left by the prompts before it chunks (`finish_admits` with `chunk`) is
admitted with that chunk at its boundary s: step s computes the chunk beside the decodes and
the whole prompts (the request runs and emits nothing: a silent step in the log), and the
next boundary is s + 1, where, as stepping's running pass would, the prompt's rest runs from
the budget the decodes leave (blocks for the whole prompt), it emits its first token and joins
the decodes from s + 2 on, and admission goes on from the budget left after it. If that step
is not determined (the rest does not fit the budget or the blocks) the stretch ends after
step s, the request holding its chunk, and stepping goes on from there.

The engine's side (planning, and each boundary's releases and admissions) is
`replica/finish_admission.py`; this module is the stretch itself (pricing, joins, apply).

Exact: results are those of stepping (tests/replica/test_admission_stretch.py, tests/golden).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from servesim.metrics.recorder import BlockGrowth
from servesim.replica.schedulers.outputs import UNLIMITED_STEPS
from servesim.replica.stretch import Stretch
from servesim.replica.stretch_growth import GrowthCount
from servesim.replica.stretch_joins import _growth
from servesim.replica.stretch_stalls import apply_stalled, frame_growth
from servesim.replica.token_advance import advance_decodes, apply_joins, apply_step0_prompts


_FAR_S = 1e300  # (a horizon past any run, but finite: `_steps_to` is asked)
_REMAINING, _CTX1 = Stretch.remaining, Stretch.ctx1  # (the slots themselves, under the lag's properties)


def _lagged(slot) -> property:
    """`AdmitStretch`'s property over a list slot of `Stretch`: read, the lists settled first."""
    def get(st: "AdmitStretch") -> list[int]:
        if st.lag and not st.raw:
            st._settle()
        return slot.__get__(st)
    return property(get, slot.__set__)


class AdmitStretch(Stretch):
    """A `Stretch` through finishes with requests waiting, priced up to the next departure
    (`kmax`), where `admit_at_finishes` decides whether it goes on. `free_blocks` counts the
    blocks of the departed requests released so far (`free0`: those free when planned)."""

    __slots__ = ("free0", "released", "num_released", "join_base", "growth", "max_steps", "chunked",
                 "pending", "stall_steps", "lag", "found", "raw")

    def __init__(self, *args, **kwargs) -> None:
        # A stall moves every running request one step later (remaining + 1, ctx1 - 1): rather
        # than a pass over the batch per stall, the stored entries of those running lag `lag`
        # stalls behind (remaining - lag, ctx1 + lag), those that left hold ~remaining (never
        # found by a search for a departure) and their real ctx1. `remaining` and `ctx1` read
        # settle the lists (one pass); the hot readers (`_leave`, `departed`, `join`) read the
        # stored entries and the lag
        self.lag = 0
        self.raw = False  # (the properties give the stored lists as they are: `join`'s call of `Stretch.join`)
        self.found: list[int] = []  # the indices of the departures located so far, in `_sorted_rem` order
        super().__init__(*args, **kwargs)
        self.free0 = 0
        self.released: dict[int, int] = {}  # index -> blocks it held before its growth here
        self.num_released = 0  # departures (in `_sorted_rem` order) released so far
        self.join_base: list[int] = []  # blocks each joiner's prompt took, in `joins` order
        self.waiting_to: list[int] = []  # steps from which one fewer waits (a waiting request joined)
        self.kmax = self._sorted_rem[0]  # the first departure's boundary
        self.growth: GrowthCount | None = None  # the decodes' block count, walked forward (set with `first_new`)
        self.max_steps = UNLIMITED_STEPS  # the policy's cap (`FastForward.max_steps`): the stretch ends there
        # prompts admitted with a first chunk: (step s, request, chunk tokens, its blocks); each
        # joins at s + 1 with the rest of its prompt, the last one's rest is `pending` until then
        self.chunked: list[tuple[int, object, int, int]] = []
        self.pending: tuple[int, object, int, int] | None = None
        # the steps of `stalls`, in order. While `growth` counts, `first_new` is in its frame (the
        # steps that are not stalls, in which every request keeps its growth's phase): a stall
        # then changes no request's growth (`growth_of` reads it, the apply maps it back)
        self.stall_steps: list[int] = []

    remaining = _lagged(_REMAINING)
    ctx1 = _lagged(_CTX1)

    def _settle(self) -> None:
        """The lists as the stalls' passes would have left them (the lag taken in: two passes)."""
        g, self.lag = self.lag, 0
        rem, ctx1 = _REMAINING.__get__(self), _CTX1.__get__(self)
        ctx1[:] = [c - g if r >= 0 else c for c, r in zip(ctx1, rem)]
        rem[:] = [r + g if r >= 0 else ~r for r in rem]

    def departed(self, a: int, b: int) -> list[int]:
        """The indices of the requests at positions a..b-1 of `_sorted_rem` (departures in
        order, b at a boundary: every request leaving there), each located once by a scan
        of the stored `remaining`; while the lists lag, its entries stop moving (see `__init__`)."""
        found = self.found
        if len(found) < b:
            rem, g = _REMAINING.__get__(self), self.lag
            ctx1 = _CTX1.__get__(self)
            i, r_prev = -1, -1
            for r in self._sorted_rem[len(found):b]:
                i = rem.index(r - g, i + 1 if r == r_prev else 0)
                r_prev = r
                found.append(i)
                if g:
                    rem[i] = ~r
                    ctx1[i] -= g
        return found[a:b]

    def _leave(self, j: int) -> None:
        if self.lag:
            return super()._leave(j, _REMAINING.__get__(self), _CTX1.__get__(self), self.lag)
        return super()._leave(j)

    def _steps_to(self, horizon: float) -> int:
        # priced to the next departure, a few steps away under overload: the scalar loop
        # (numpy's fixed cost, and the departures' prefix sums rebuilt after each join, are not
        # worth it there), however far the horizon
        return min(super()._steps_to(horizon), self.kmax - self.k)

    def price(self, horizon: float) -> None:
        # (an unbounded horizon, arrivals kept behind the blocked head, would take a numpy chunk
        # however near the departure: its scalar state is then rebuilt, a sort, at the boundary)
        super().price(horizon if horizon < _FAR_S else _FAR_S)

    def blocks_needed(self, steps: int, block_size: int) -> int:
        g = self.growth
        if g is None:
            return super().blocks_needed(steps, block_size)
        # `growth` walks the steps that are not stalls (in which nothing grows)
        return g.blocks_needed(steps - self.stalls_before(steps))

    def blocks_bound(self, steps: int, block_size: int) -> int:
        return self.blocks_needed(steps, block_size)  # (exact, and as cheap as the bound here)

    def stalls_before(self, j: int) -> int:
        """Prompt-only steps before step j (all of them for a step after the last: pricing's,
        the boundaries' and the departures' reads)."""
        at = self.stall_steps
        return len(at) if not at or at[-1] < j else bisect_left(at, j)

    def growth_of(self, i: int, steps: int, block_size: int) -> int:
        """Blocks request i grew in the stretch's steps before `steps` (its own, up to its
        departure at most): from `first_new` in `growth`'s frame, where its growth is regular
        however many stalls it ran through."""
        if self.growth is None:  # (the stretch's frame, and the growth kept before each stall)
            return _growth(self.first_new[i], 0, steps, block_size) + sum(
                [(m - f - 1) // block_size + 1 for j, f, s in self.grown if j == i and f < (m := min(s, steps))])
        return _growth(self.first_new[i], 0, steps - self.stalls_before(steps), block_size)

    def blocks_added(self, j: int, block_size: int, blocks_held) -> int:
        if self.growth is None or not self.stalls:
            return super().blocks_added(j, block_size, blocks_held)
        # (`Stretch.blocks_added` with each request's growth read in `growth`'s frame)
        delta = 0
        for i, (req, r) in enumerate(zip(self.reqs, self.remaining)):
            delta += self.growth_of(i, j + 1 if j < r else r, block_size)
            if r <= j:  # (finished in step r - 1 < j: everything it held is free again)
                delta -= blocks_held(req) + self.growth_of(i, r, block_size)
        return delta

    def join(self, joins: list, first_new: list[int], blocks: int, step_s: float, forms, block_size: int) -> None:
        n = len(self.reqs)
        lag = self.lag
        if lag and any(req.output_len < 2 for req, _ in joins):
            self._settle()  # (a joiner leaving at s + 1 would be sought by `join`'s `_leave` before it lags)
            lag = 0
        if lag:  # (`Stretch.join` on the stored lists: it appends the joiners' real entries, `_leave` reads the lag)
            self.raw = True
            super().join(joins, first_new, blocks, step_s, forms, block_size)
            self.raw = False
        else:
            super().join(joins, first_new, blocks, step_s, forms, block_size)
        rem = _REMAINING.__get__(self)
        joined = rem[n:]
        if lag:  # (the joiners' entries lag as the others')
            rem[n:] = [r - lag for r in joined]
            ctx1 = _CTX1.__get__(self)
            ctx1[n:] = [c + lag for c in ctx1[n:]]
        g = self.growth
        if g is None:
            return
        off = len(self.stalls)
        if off:  # (in the steps `growth` walks: those before the join less the stalls, its own included)
            first_new = self.first_new[n:] = [f - off for f in first_new]
            ok = g.add(first_new, [r - off for r in joined])
        else:
            ok = g.add(first_new, joined)
        if not ok:  # (cannot happen: a joiner grows after its join step)
            if off:
                raise AssertionError("a request joining after a stall grows in a step already counted")
            self.growth = None  # (no stall yet: `first_new` is the stretch's frame, the pass counts)

    def stall(self, joins: list, first_new: list[int], blocks: int, step_s: float, forms, block_size: int) -> None:
        """`Stretch.stall` while `growth` counts the blocks: in its frame (the steps that are not
        stalls) every request keeps its growth, so `first_new` is left as it is and nothing of
        the growth before the stall is kept (`growth_of` reads it at the departures, the apply
        maps it to the stretch's steps); only the departures move (a C pass over those running),
        the contexts and `remaining` by the lag (`__init__`)."""
        if self.growth is None:
            return super().stall(joins, first_new, blocks, step_s, forms, block_size)
        s = self.k
        rem = self._sorted_rem
        p = bisect_right(rem, s)
        self.departed(0, p)  # (those that left stop moving: located, and while lagging set apart)
        if not self.lag:  # (the lists start lagging: those that left set apart, by one pass)
            stored = _REMAINING.__get__(self)
            stored[:] = [r if r > s else ~r for r in stored]
        # each request running at s: the same contexts from s + 1 on, its last token one step
        # later (`lag`: in the stored lists at their next read), the departures one step later
        self.lag += 1
        rem[p:] = [r + 1 for r in rem[p:]]
        stalled = len(rem) - p
        self._ctx_total -= stalled
        if self._f is not None and self._priced == s:
            self._ctx_sum -= stalled  # (as `StretchJoins.stall`: `join` adds a step to each)
        self.stalls.append((s, stalled))
        self.stall_steps.append(s)
        # (`StretchJoins.blocks_needed`'s base is not kept: `growth` counts every block here)
        self._need_at, self._stall_need = (UNLIMITED_STEPS, 0, []), None
        self.join(joins, first_new, blocks, step_s, forms, block_size)

    def prompt_tokens_before(self, j: int) -> int:
        # (a chunk's request joins at s + 1 with its whole prompt: the chunk counts from s + 1 to s + 2)
        return super().prompt_tokens_before(j) + sum([c for s, _, c, _ in self.chunked if s + 1 == j])

    def apply(self, engine) -> list:
        """`Engine._apply_stretch` for this stretch: the departures not yet released are
        released first (stepping freed them before the later steps' allocations), the
        growth of the others allocated, every joiner's step logged. Returns the requests that
        finished in it, in finish order."""
        kv, k, reqs, remaining, first_new = engine.kv, self.k, self.reqs, self.remaining, self.first_new
        bs = kv.block_size
        first = engine.recorder.num_steps
        steps_of = [r if r < k else k for r in remaining]
        finished = sorted((i for i, r in enumerate(remaining) if r <= k), key=remaining.__getitem__)
        released = self.released
        growth_of = self.growth_of
        for i in finished:
            if steps_of[i] < k and i not in released:  # (left before a cut: released now, before the grants)
                released[i] = kv.num_blocks_of(reqs[i].id)
                kv.free_grown(reqs[i].id, growth_of(i, steps_of[i], bs))
        frees = [(m, released[i] + growth_of(i, m, bs)) for i in finished if (m := steps_of[i]) < k]
        ends = self.ends
        silent_at, silent_n = [], []
        if self.stalls:
            new_blocks = [(reqs[i], c) for i, m in enumerate(steps_of) if i not in released
                          and (c := growth_of(i, m, bs))]
            prefill_tokens, prefill_at = apply_stalled(self, steps_of, first, frees, self.join_base)
            if self.growth is not None:  # (the growth in the stretch's steps: a block each)
                first_new, steps_of = frame_growth(first_new, steps_of, self.stall_steps, bs)
            else:  # (the growth before each stall as an entry of its own)
                first_new = first_new + [f for _, f, _ in self.grown]
                steps_of = steps_of + [min(s, steps_of[i]) for i, _, s in self.grown]
            silent_at, silent_n = self.stalled_before(k)
        else:
            new_blocks = [(req, (m - f - 1) // bs + 1) for i, (req, f, m) in enumerate(zip(reqs, first_new, steps_of))
                          if f < m and i not in released]
            nd = len(self.decodes)
            advance_decodes(self.decodes, steps_of, first)
            prefill_tokens = apply_step0_prompts(self.prefills, steps_of[nd:], first, self._endv)
            prefill_at = apply_joins(self, steps_of, first, frees, self.join_base) if self.joins else ()
        if self.chunked:  # (a policy that chunks does not stall: `silent_n` is one each)
            prefill_at, silent_at = self._apply_chunks(k, frees, prefill_at)
        kv_used = BlockGrowth(kv.num_gpu_blocks - self.free0, first_new, steps_of, bs, frees)
        kv.allocate_plain_many(new_blocks)
        done = [reqs[i] for i in finished]
        endv = self._endv  # (Python floats: no numpy scalar made per finish)
        for req in done:
            req.finish_s = endv[req.token_steps[-1] - first]
        engine.num_steps += k
        engine.num_fast_forwarded_steps += k
        engine.recorder.log_decode_steps(self.start_s, ends, self.batch_runs(), self.num_waiting, kv_used,
                                         prefill_tokens, [j for j in self.waiting_from if j < k],
                                         prefill_at=prefill_at, waiting_to=[j for j in self.waiting_to if j < k],
                                         silent_at=silent_at, silent_n=silent_n)
        return done

    def _apply_chunks(self, k: int, frees: list, prefill_at) -> tuple[list[tuple[int, int]], list[int]]:
        """The first chunks of the prompts admitted so (`chunked`) in the step log: the chunk's
        tokens and blocks at its step s (`apply_joins` counted the whole prompt and the rest's
        blocks at s + 1, where it joined), a running request that emits nothing there; one
        whose rest did not run in the stretch holds its chunk. Returns (prefill_at, silent_at)."""
        tokens = dict(prefill_at)
        silent = []
        for s, req, c, blocks in self.chunked:
            if s >= k:
                continue  # (a crash settled the stretch before the step it was admitted in ended)
            if s + 1 < k:
                tokens[s + 1] -= c
            else:
                req.num_computed_tokens += c  # its rest is the next step's, stepped
            tokens[s] = tokens.get(s, 0) + c
            frees.append((s, -blocks))
            silent.append(s)
        return list(tokens.items()), silent
