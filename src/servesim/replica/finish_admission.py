"""The engine's side of an admission stretch (`replica/admission_stretch.py`, whose docstring
describes the mechanism): planning one from the step `schedule` just returned, and at each
departure's boundary releasing the departed requests' blocks, asking the policy what its next
`schedule` admits, and adding those requests to the stretch (whole prompts, a first chunk, or
for a prefill-first policy a prompt-only step) before pricing on.
"""

from __future__ import annotations

from bisect import bisect_right

from servesim.replica.admission_stretch import AdmitStretch
from servesim.replica.schedulers.outputs import UNLIMITED_STEPS
from servesim.replica.stretch_growth import GrowthCount
from servesim.replica.stretch_join import MAX_EXTRA_DEPARTED, _admit, prompts_at_s, stall_step_s


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
    kv = engine.kv
    st.first_new = kv.first_new_block_steps(reqs, ctx1)
    st.free_blocks = st.free0 = kv.num_free_blocks
    st.growth = GrowthCount(st.first_new, remaining, kv.block_size)
    st.kmax = engine.scheduler.admit_step(st, 1, min(st.kmax, max_steps))
    st.price(horizon_s)
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
    sched, kv, reqs = engine.scheduler, engine.kv, st.reqs
    rem = st._sorted_rem
    p1 = bisect_right(rem, s)
    num_running = len(rem) - p1
    if len(reqs) - num_running > num_running + MAX_EXTRA_DEPARTED:
        return False  # mostly requests that left: applied, the next stretch holds those running
    bs = kv.block_size
    gone, freed = _gone(st, kv, p1)
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
    _release(st, kv, gone, freed, p1)
    if stall and joins:
        _stall(engine, st, s, joins, now_s, step_s)
    elif joins or pending:
        _join(engine, st, s, num_running, joins, now_s, pending)
    rem = st._sorted_rem
    # the next departure (a joiner's, at the latest), or the next step if a prompt was chunked
    # or the policy admits again after the prompt-only step (the blocks free then: less the prompts')
    again = st.pending or (stall and joins and sched.readmits_after_stall(
        num_running + len(joins), free - sum([-(-n // bs) for _, n in joins])))
    st.kmax = s + 1 if again else sched.admit_step(st, s + 1, min(rem[bisect_right(rem, s)], st.max_steps))
    st.price(engine._stretch_horizon_s(now_s, st.end_s))
    if st.k > s + 1:
        engine._limit(st, s + 1)  # (step s's blocks were counted above)
    engine._schedule_stretch_end(st)
    return True


def _gone(st: AdmitStretch, kv, p1: int) -> tuple[list[tuple[int, int, int]], int]:
    """(index, blocks held before its growth, its growth) of each request that left since the
    last boundary (those up to `p1` in the order of departures), and the blocks they free."""
    reqs, rem, bs, growth_of = st.reqs, st._sorted_rem, kv.block_size, st.growth_of
    gone = []
    freed = 0
    for i, r in zip(st.departed(st.num_released, p1), rem[st.num_released:p1]):
        base, grown = kv.num_blocks_of(reqs[i].id), growth_of(i, r, bs)
        gone.append((i, base, grown))
        freed += base + grown
    return gone, freed


def _release(st: AdmitStretch, kv, gone: list[tuple[int, int, int]], freed: int, p1: int) -> None:
    """Free the blocks of the requests that left (`_gone`), as stepping freed them at their
    finish, and count them free in the stretch."""
    reqs = st.reqs
    for i, base, grown in gone:
        kv.free_grown(reqs[i].id, grown)
        st.released[i] = base
    st.num_released = p1
    st.free_blocks += freed
    st.pending = None


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
    step_s = prompts_at_s(engine.perf, st, s, num_running, chunks)
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
    _admit(engine, st, now_s, joins, sum(base), step_s, st.stall, engine.scheduler.admit_at_finish)


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
