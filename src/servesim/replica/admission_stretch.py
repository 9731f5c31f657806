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

Exact: results are those of stepping (tests/replica/test_admission_stretch.py, tests/golden).
"""

from __future__ import annotations

from bisect import bisect_right

from servesim.metrics.recorder import BlockGrowth
from servesim.replica.schedulers.outputs import UNLIMITED_STEPS
from servesim.replica.stretch import Stretch
from servesim.replica.stretch_growth import GrowthCount
from servesim.replica.stretch_join import MAX_EXTRA_DEPARTED, _admit, stall_step_s
from servesim.replica.stretch_joins import _growth
from servesim.replica.stretch_stalls import apply_stalled, grown_blocks


_FAR_S = 1e300  # (a horizon past any run, but finite: `_steps_to` is asked)


class AdmitStretch(Stretch):
    """A `Stretch` through finishes with requests waiting, priced up to the next departure
    (`kmax`), where `admit_at_finishes` decides whether it goes on. `free_blocks` counts the
    blocks of the departed requests released so far (`free0`: those free when planned)."""

    __slots__ = ("free0", "released", "num_released", "join_base", "waiting_to", "growth", "max_steps", "chunked",
                 "pending", "grown_of")

    def __init__(self, *args, **kwargs) -> None:
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
        self.grown_of: dict[int, int] = {}  # index -> blocks it grew before the stalls (`Stretch.grown`, summed)

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
        if not self.stalls:
            return g.blocks_needed(steps)
        # `growth` walks the steps that are not stalls (in which nothing grows): asked past the last
        if self.stalls[-1][0] >= steps:
            return super().blocks_needed(steps, block_size)  # (not asked: every query follows it)
        return g.blocks_needed(steps - len(self.stalls))

    def blocks_bound(self, steps: int, block_size: int) -> int:
        return self.blocks_needed(steps, block_size)  # (exact, and as cheap as the bound here)

    def join(self, joins: list, first_new: list[int], blocks: int, step_s: float, forms, block_size: int) -> None:
        n = len(self.reqs)
        super().join(joins, first_new, blocks, step_s, forms, block_size)
        g = self.growth
        if g is None:
            return
        if self.stalls:  # (in the steps `growth` walks: those before the join less the stalls, its own included)
            off = len(self.stalls)
            ok = g.add([f - off for f in first_new], [r - off for r in self.remaining[n:]])
        else:
            ok = g.add(first_new, self.remaining[n:])
        if not ok:
            self.growth = None  # (cannot happen: a joiner grows after its join step; the pass counts then)

    def stall(self, joins: list, first_new: list[int], blocks: int, step_s: float, forms, block_size: int) -> None:
        """`Stretch.stall` while `growth` counts the blocks (in the steps that are not stalls, in
        which every request keeps its growth's phase): the frame's shift alone, as C passes
        over the lists instead of `StretchJoins.stall`'s loop, whose count is `growth`'s here."""
        if self.growth is None:
            return super().stall(joins, first_new, blocks, step_s, forms, block_size)
        s, bs = self.k, block_size
        remaining, first = self.remaining, self.first_new
        rem = self._sorted_rem
        p = bisect_right(rem, s)
        rem[p:] = [r + 1 for r in rem[p:]]
        # each request running at s: its growth before s kept, its first new block step after s
        # one later, the same contexts from s + 1 on, its last token one step later
        self.grown += [(i, f, s) for i, f, r in zip(range(len(first)), first, remaining) if f < s < r]
        first[:] = [((f if f >= s else f + (s - f + bs - 1) // bs * bs) + 1) if r > s else f
                    for f, r in zip(first, remaining)]
        self.ctx1[:] = [c - 1 if r > s else c for c, r in zip(self.ctx1, remaining)]
        remaining[:] = [r + 1 if r > s else r for r in remaining]
        stalled = len(rem) - p
        self._ctx_total -= stalled
        if self._f is not None and self._priced == s:
            self._ctx_sum -= stalled  # (as `StretchJoins.stall`: `join` adds a step to each)
        self.stalls.append((s, stalled))
        # (`StretchJoins.blocks_needed`'s base left uncounted: should `growth` fail, every count is
        # made from the start, with the growth before the stalls)
        self._need_at, self._stall_need = (UNLIMITED_STEPS, 0, []), None
        self.join(joins, first_new, blocks, step_s, forms, bs)

    def prompt_tokens_before(self, j: int) -> int:
        # (a chunk's request joins at s + 1 with its whole prompt: the chunk counts from s + 1 to s + 2)
        return super().prompt_tokens_before(j) + sum([c for s, _, c, _ in self.chunked if s + 1 == j])

    def apply(self, engine) -> list:
        """`Engine._apply_stretch` for this stretch: the departures not yet released are
        released first (stepping freed them before the later steps' allocations), the
        growth of the others allocated, every joiner's step logged. Returns the requests that
        finished in it, in finish order."""
        from servesim.replica.fast_forward import (advance_decodes, apply_joins,  # (fast_forward imports
                                                   apply_step0_prompts)  # this module)

        kv, k, reqs, remaining, first_new = engine.kv, self.k, self.reqs, self.remaining, self.first_new
        bs = kv.block_size
        first = engine.recorder.num_steps
        steps_of = [r if r < k else k for r in remaining]
        finished = sorted((i for i, r in enumerate(remaining) if r <= k), key=remaining.__getitem__)
        released = self.released
        grown = grown_blocks(self, steps_of, bs) if self.grown else {}  # (before prompt-only steps)
        for i in finished:
            if steps_of[i] < k and i not in released:  # (left before a cut: released now, before the grants)
                released[i] = kv.num_blocks_of(reqs[i].id)
                kv.free_grown(reqs[i].id, _growth(first_new[i], 0, steps_of[i], bs) + grown.get(i, 0))
        frees = [(m, released[i] + _growth(first_new[i], 0, m, bs) + grown.get(i, 0))
                 for i in finished if (m := steps_of[i]) < k]
        new_blocks = [(req, (m - f - 1) // bs + 1) for i, (req, f, m) in enumerate(zip(reqs, first_new, steps_of))
                      if f < m and i not in released]
        ends = self.ends
        silent_at, silent_n = [], []
        if self.stalls:
            new_blocks += [(reqs[i], c) for i, c in grown.items() if i not in released]
            prefill_tokens, prefill_at = apply_stalled(self, steps_of, first, frees, self.join_base)
            # (the growth before each stall as an entry of its own; each stall's requests silent)
            first_new = first_new + [f for _, f, _ in self.grown]
            steps_of = steps_of + [min(s, steps_of[i]) for i, _, s in self.grown]
            silent_at, silent_n = self.stalled_before(k)
        else:
            nd = len(self.decodes)
            advance_decodes(self.decodes, steps_of, first)
            prefill_tokens = apply_step0_prompts(self.prefills, steps_of[nd:], first, ends)
            prefill_at = apply_joins(self, steps_of, first, frees, self.join_base) if self.joins else ()
        if self.chunked:  # (a policy that chunks does not stall: `silent_n` is one each)
            prefill_at, silent_at = self._apply_chunks(k, frees, prefill_at)
        kv_used = BlockGrowth(kv.num_gpu_blocks - self.free0, first_new, steps_of, bs, frees)
        kv.allocate_plain_many(new_blocks)
        done = [reqs[i] for i in finished]
        for req in done:
            req.finish_s = float(ends[req.token_steps[-1] - first])
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


def admission_fast_forward(engine, now_s: float, end0_s: float, horizon_s: float, out, decodes: list,
                           prefills: list, reqs: list, ctx1: list[int], remaining: list[int],
                           max_steps: int = UNLIMITED_STEPS) -> bool:
    """Plan an admission stretch from the step `schedule` just returned (decodes, and prompts
    finished in it, with requests waiting): priced to its first departure, whose boundary
    `admit_at_finishes` handles, and at most `max_steps` steps (the policy's cap). False,
    changing nothing, if it would hold a single step that no departure follows."""
    if max(remaining) < 2 or max_steps < 2:
        return False
    st = AdmitStretch(now_s, end0_s, out, decodes, prefills, reqs, ctx1, remaining, True, engine._decode_fn,
                      engine.perf, engine.scheduler.num_waiting, engine._decode_forms, [])
    st.max_steps = max_steps
    st.kmax = min(st.kmax, max_steps)
    st.price(horizon_s)
    kv = engine.kv
    st.first_new = kv.first_new_block_steps(reqs, ctx1)
    st.free_blocks = st.free0 = kv.num_free_blocks
    st.growth = GrowthCount(st.first_new, remaining, kv.block_size)
    if st.k < 2 and st.kmax == 1:
        pass  # a request's last token is step 0's: the stretch is that step, then its boundary
    elif st.k < 2 or not engine._limit(st, 1):
        return False
    engine.stretch = st
    engine._schedule_stretch_end(st)
    return True


def admit_at_finishes(engine, st: AdmitStretch, now_s: float) -> bool:
    """At `now_s`, the boundary after the step in which `st`'s next requests emitted their
    last token: release their blocks, admit the waiting requests the policy's next `schedule`
    would admit (whole prompts), and price on to the next departure. True if the stretch goes
    on (its end event is rescheduled); False changes nothing (the engine applies it)."""
    s = st.k
    pending = st.pending
    if (st.final or s != st.kmax or s >= st.max_steps or engine.ports is not None
            or not (engine.scheduler.num_waiting or pending)):
        return False
    sched, kv, reqs, remaining, first_new = engine.scheduler, engine.kv, st.reqs, st.remaining, st.first_new
    rem = st._sorted_rem
    p1 = bisect_right(rem, s)
    num_running = len(rem) - p1
    if len(reqs) - num_running > num_running + MAX_EXTRA_DEPARTED:
        return False  # mostly requests that left: applied, the next stretch holds those running
    bs = kv.block_size
    gone = []  # (index, blocks held before its growth, its growth) of each request that left since
    freed = 0
    i, r_prev = -1, -1
    grown_of = st.grown_of
    for r in rem[st.num_released:p1]:
        i = remaining.index(r, i + 1 if r == r_prev else 0)
        r_prev = r
        base, grown = kv.num_blocks_of(reqs[i].id), _growth(first_new[i], 0, r, bs)
        if grown_of:
            grown += grown_of.get(i, 0)  # (its growth before the stalls)
        gone.append((i, base, grown))
        freed += base + grown
    free = st.free_blocks + freed - st.join_blocks
    # A prefill-first policy (`stalls_decodes`) admits on the blocks free before the decodes of
    # step s take theirs: a step that admits runs only the prompts (the decodes stall in it)
    stall = sched.stalls_decodes
    if stall:
        free -= st.blocks_needed(s, bs)
    else:
        free -= st.blocks_needed(s + 1, bs)
    rest = 0  # the tokens of a chunked prompt's rest in step s, and the blocks they take
    if pending is not None:
        rest, rest_blocks = _rest_of(sched, pending, num_running)
        if rest is None:
            return False  # its rest would be chunked again: stepping decides
        free -= rest_blocks
    if free < 0 and not stall:
        return False  # the decodes of step s (and a prompt's rest) do not fit: stepping preempts there
    sched.finish_departs([reqs[i] for i, _, _ in gone])
    # (the budget the running requests leave: a token per decode, and a prompt's rest)
    joins = sched.finish_admits(num_running + rest, free) if sched.num_waiting else []
    if joins is None or not (joins or num_running or pending):
        return False
    if stall:
        if not joins and free < st.blocks_needed(s + 1, bs) - st.blocks_needed(s, bs):
            return False  # step s decodes and their blocks do not fit: stepping preempts there
        if joins and (step_s := stall_step_s(engine.perf, st, joins)) is None:
            return False
    for i, base, grown in gone:  # (stepping freed them at their finish)
        kv.free_grown(reqs[i].id, grown)
        st.released[i] = base
    st.num_released = p1
    st.free_blocks += freed
    st.pending = None
    if stall and joins:
        _stall(engine, st, s, joins, now_s, step_s)
    elif joins or pending:
        _join(engine, st, s, num_running, joins, now_s, pending)
    rem = st._sorted_rem
    # the next departure (a joiner's, at the latest), or the next step if a prompt was chunked
    st.kmax = s + 1 if st.pending else min(rem[bisect_right(rem, s)], st.max_steps)
    st.price(engine._stretch_horizon_s(now_s, st.end_s))
    if st.k > s + 1:
        engine._limit(st, s + 1)  # (step s's blocks were counted above)
    engine._schedule_stretch_end(st)
    return True


def _join(engine, st: AdmitStretch, s: int, num_running: int, joins: list, now_s: float, pending=None) -> None:
    """Admit `joins` at step s of `st` (their blocks were counted free): as stepping's
    `schedule` would, then into the stretch (`Stretch.join`). A prompt that a chunk of it was
    admitted for at s - 1 (`pending`) runs its rest first and joins with the whole prompt;
    a chunk admitted now (the last of `joins`) joins at s + 1."""
    kv, sched = engine.kv, engine.scheduler
    chunks = [(n, 0) for _, n in joins]
    if pending is not None:
        _, req, c, _ = pending
        chunks.insert(0, (req.num_tokens - c, c))  # (the running pass runs before admission)
    step_s = _admit_step_s(engine.perf, st, s, num_running, chunks)
    if joins:
        sched.admit_at_finish(joins, st.out)  # (listed in the output the stretch's end hands `end_step`)
    new = [req for req, _ in joins]
    for req in new:
        if req.first_scheduled_s is None:
            req.first_scheduled_s = now_s
    base = kv.num_blocks_list(new)
    st.waiting_to += [s] * len(joins)
    engine.num_finish_admissions += len(joins)
    if joins and joins[-1][1] != new[-1].num_tokens:  # a first chunk: it joins at s + 1
        req, n = joins.pop()
        new.pop()
        st.pending = (s, req, n, base.pop())
        st.chunked.append(st.pending)
        st.join_blocks += st.pending[3]
    if pending is not None:
        _, req, c, blocks = pending
        if not kv.allocate_slots(req, req.num_tokens):  # (its chunk's tokens are applied with the stretch)
            raise AssertionError(f"the rest of request {req.id}'s prompt could not get its blocks")
        joins.insert(0, (req, req.num_tokens))
        new.insert(0, req)
        base.insert(0, kv.num_blocks_of(req.id) - blocks)
    st.join_base += base
    first_new = kv.first_new_block_steps(new, [n - s for _, n in joins])
    st.join(joins, first_new, sum(base), step_s, engine._decode_forms(len(st.reqs) + len(joins)), kv.block_size)


def _stall(engine, st: AdmitStretch, s: int, joins: list, now_s: float, step_s: float) -> None:
    """Admit `joins` (fresh, whole: their blocks were counted free) at step s of `st` for a
    prefill-first policy: step s runs their prompts alone, `step_s` long, every request running
    stalled in it (`Stretch.stall`); from s + 1 on they decode with the rest."""
    bs = engine.kv.block_size
    base = [-(-n // bs) for _, n in joins]  # (fresh requests: their prompts' blocks)
    st.join_base += base
    st.waiting_to += [s] * len(joins)
    engine.num_finish_admissions += len(joins)
    n = len(st.grown)
    _admit(engine, st, now_s, joins, sum(base), step_s, st.stall, engine.scheduler.admit_at_finish)
    grown_of = st.grown_of
    for i, f, g in st.grown[n:]:  # (the growth before this stall of each request it stalled)
        grown_of[i] = grown_of.get(i, 0) + (g - f - 1) // bs + 1


def _rest_of(sched, pending: tuple, num_running: int) -> tuple[int | None, int]:
    """(tokens, blocks) of the rest of `pending`'s prompt in the step after its first chunk, as
    stepping's running pass gives it (the budget the `num_running` decodes leave, the long-prefill
    cap); (None, 0) if that is not its whole rest."""
    _, req, c, blocks = pending
    rest = req.num_tokens - c
    _, max_num_batched_tokens, threshold, _ = sched.limits
    if rest > max_num_batched_tokens - num_running or 0 < threshold < rest:
        return None, 0
    return rest, -(-req.num_tokens // sched.kv.block_size) - blocks


def _admit_step_s(perf, st: AdmitStretch, s: int, num_running: int, chunks: list[tuple[int, int]]) -> float:
    """The time of step s: the `num_running` decodes and the prompts' chunks ((tokens, context)
    in step order). With the model's chunk form (no sliding window) `step_time_s` reads the
    decodes' contexts only through their number and sum, which the pricing holds: one chunk is
    that form itself, several are priced with one context carrying the sum (bit-identical, no
    pass over the batch); else the decodes' contexts are listed."""
    chunk_fn = getattr(perf, "chunk_time_fn", None)
    if chunk_fn is not None and st._f is not None and st._priced == s and (num_running or len(chunks) == 1):
        f = chunk_fn(num_running, chunks[0][0])
        if f is not None:
            if len(chunks) == 1:
                return f(chunks[0][1], st._ctx_sum)  # (the scalar state is step s's: its context sum)
            return perf.step_time_s(chunks, [st._ctx_sum] + [0] * (num_running - 1))
    return perf.step_time_s(chunks, [c + s - 1 for c, r in zip(st.ctx1, st.remaining) if r > s])
