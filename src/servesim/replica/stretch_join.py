"""Arrivals joining a fast-forwarded stretch instead of ending it.

At light load nearly every arrival lands in a stretch through finishes (nothing was waiting
when it was planned). Stepping, the next `schedule` runs every request still running for one
token and admits the newcomer with its whole prompt; the steps after it decode the grown
batch. Ending the stretch there meant applying it to every running request, scheduling them
again and planning a new stretch from the request objects: a few passes over the batch per
arrival. Instead, when the scheduler answers that the waiting requests are admitted whole
(`Scheduler.arrivals_join`) and their blocks fit, they are admitted at that boundary (the
stretch's last step so far) and the stretch goes on with them: the next step is priced with
their prompts beside the running decodes, the later ones as decodes of the grown batch, and the
running requests stay unapplied until the stretch really ends (a request left waiting, the KV
blocks free when it was planned run out, the end of the run, or anything else that cuts it).

Exact: the stretch's steps are those stepping would run (same batches, same prices, same
allocations: every block comes from those free when the stretch was planned, so the free
queue pops the same blocks whatever the order of the allocations, and the request objects
show the same state once it is applied). Checked against stepping by
`tests/replica/test_stretch_join.py`.

Speculative stretches (`SpecStretch`, `spec_join_arrivals`): stepping's step s runs the decodes
still running, each with its lookahead slots and acceptance row in batch order, and the admitted
prompts first in the verify pass; from step s + 1 on the newcomers speculate with the rest in
the order the policy's `repeat_order` gives the grown batch. Step s is priced by `speculate`'s
rules (`SpecStretchJoins._join_step`) and the stretch prices on. Every block of the stretch (the
lookahead slots, the prompts' and those the policy keeps free at admission) must fit in those
free when it was planned, so each allocation stepping makes at step s (the decodes' slots, the
prompts, the lookahead) succeeds there too. Checked by `tests/replica/test_spec_join.py`. A
prefill-first policy's step s (`stalls_decodes`: vLLM V0, SGLang, VTC's mini-batch where its
count lets it run at s) runs the prompts alone, priced as stepping prices a step without decodes
(`SpecStretchJoins._stall_step`): the decodes stall there (no token, slot or acceptance row)
and speculate from s + 1 with the newcomers. Checked by `tests/replica/test_spec_stall_join.py`.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right

from servesim.replica.chunk_join import chain_join, chunk_join
from servesim.replica.finish_notices import tell_last, untold_by
from servesim.replica.schedulers.outputs import UNLIMITED_STEPS, SchedulerOutput
from servesim.replica.spec_stretch import SpecStretch
from servesim.replica.stretch import Stretch


# A stretch keeps the requests that left it (they are applied when it ends), and some of its
# passes (pricing from the numpy chunks' prefix sums, block counts) read them all: requests
# join it while it holds at most this many more that left than are running.
MAX_EXTRA_DEPARTED = 32


def join_arrivals(engine, st: Stretch, now_s: float) -> bool:
    """At `now_s`, the end of the stretch `st` (cut by arrivals): admit the waiting requests
    into it if stepping would admit them whole at the next step, and price it on. True if they
    joined (the stretch's end event is rescheduled); False changes nothing (but for the finishes
    at its last step, told as stepping's step end tells them: `tell_last`)."""
    if type(st) is SpecStretch:
        return spec_join_arrivals(engine, st, now_s)
    sched, kv = engine.scheduler, engine.kv
    if (type(st) is not Stretch or not st.through or st.limited or st.keyed or st.in_order
            or st._perf is not engine.perf or engine.ports is not None or len(sched.running) != len(st.reqs)):
        return False
    s = st.k  # the next step: the first whose `schedule` sees the newcomers
    if engine.notice is not None and untold_by(st, s) and not tell_last(engine, st, now_s):
        # (finishes at step s - 1 told now, as stepping's step end does; or not, where one left
        # earlier is untold or a follow-up arrives at once, which would end the stretch at that
        # finish's step and leave a newcomer joined at s admitted with nothing computed)
        return False
    if st.prompt_runs and st.prompt_runs[-1][0] + len(st.prompt_runs[-1][1]) >= s:
        # (cut inside a prompt's chunks: the budget is that prompt's up to its last, where
        # a newcomer kept waiting may join beside its rest)
        return st.chain_at is not None and chain_join(engine, st, now_s)
    rem = st._sorted_rem
    num_running = len(rem) - bisect_right(rem, s)  # (`st.active_at(s)`)
    if len(st.reqs) - num_running > num_running + MAX_EXTRA_DEPARTED:
        return False  # mostly requests that left: the stretch is applied, the next one holds only those running
    joins = sched.arrivals_join(num_running)
    if not joins:
        return chunk_join(engine, st, now_s, num_running)  # (a prompt the budget chunks, Sarathi's)
    if sched.reorders_running and engine.notice is not None and (
            departs_together(st, s) or any(r.output_len < 2 for r, _ in joins)):
        return False  # (two leaving at the join step s, which the stretch would then run: `Engine._limit`)
    if sched.stalls_decodes:
        return _stall_join(engine, st, now_s, joins)
    bs = kv.block_size
    blocks, kept = sched.join_blocks(joins)
    free = st.free_blocks - st.join_blocks - blocks - kept
    if st.blocks_bound(s + 1, bs) > free and st.blocks_needed(s + 1, bs) > free:
        # the decodes' blocks up to step s, the prompts' (and a watermark) do not fit in those
        # free at the start: stepping has at least those free at the admission (finishes only
        # add to them), so a join that fits them is admitted there too
        return False
    if len(joins) == 1 and (st._f is None or st._priced != s) and st._forms is not None:
        # A stretch priced ahead by numpy chunks (each replica's among many: its horizon lies
        # arrival gaps away) and cut here: drop the steps past s and rebuild the scalar state
        # of step s from exact integers, so the arrival takes the lean join below
        if st._priced != s:  # (a cut left it priced to s: nothing to drop)
            st.truncate(s)
        st._sync()
    if len(joins) == 1 and st._f is not None and st._priced == s:
        _join_one(engine, st, now_s, joins, blocks, num_running)  # (the usual arrival: one request, the scalar state step s's)
        # (the scalar state is step s + 1's; a busy replica among many prices a few steps ahead:
        # `Engine.join_ahead`, as a keyed turn's join does since sess32)
        return _priced_on(engine, st, now_s, s, 1)
    _admit(engine, st, now_s, joins, blocks, _join_step_s(engine.perf, st, s, num_running, joins), st.join)
    return _priced_on(engine, st, now_s, s, len(joins))


def _admit(engine, st: Stretch, now_s: float, joins: list, blocks: int, step_s: float, add, admit=None) -> None:
    """Admit `joins` (`admit`: the policy's `join`, or `admit_at_finish` at a finish) and add them
    to the stretch at its step s = k (`add`: `Stretch.join`, or `Stretch.stall` for a prompt-only
    step), `step_s` long."""
    (admit or engine.scheduler.join)(joins, st.out)  # (listed in the output the stretch's end hands `end_step`, as stepping's last step would)
    for req, _ in joins:
        if req.first_scheduled_s is None:
            req.first_scheduled_s = now_s
    s, bs = st.k, engine.kv.block_size
    first_new = engine.kv.first_new_block_steps([req for req, _ in joins], [n - s for _, n in joins])
    add(joins, first_new, blocks, step_s, engine._decode_forms(len(st.reqs) + len(joins)), bs)


def _priced_on(engine, st: Stretch, now_s: float, s: int, num_joined: int, held: bool = False) -> bool:
    """After `num_joined` requests joined at step s: price the stretch on to the next event
    (`price_on` from the scalar state the join left, `join_ahead` steps ahead at a replica among
    many: every join since the forty-second round; `price` for requests `held` to a later step,
    `_hold`'s, whose stretch went on unchanged before them), limit it to the blocks free, and
    (re)schedule its end. True."""
    engine.num_joined_arrivals += num_joined
    horizon_s = engine._stretch_horizon_s(now_s, st.end_s, st.timers)
    if held:
        st.price(horizon_s)
    else:
        st.price_on(horizon_s, engine.join_ahead)
    engine._limit(st, s + 1)
    engine._schedule_stretch_end(st)
    return True


def _stall_join(engine, st: Stretch, now_s: float, joins: list) -> bool:
    """`join_arrivals` for a prefill-first policy: stepping's step s runs the admitted prompts
    alone (priced as stepping prices that step), the running decodes stalled, and the steps
    after it decode the grown batch (`Stretch.stall`). The blocks checked are those the
    decodes grew before s (none grow in s), the prompts' and those the policy keeps free
    (vLLM V0's watermark, SGLang's decode reserve). A policy that admits only after so many
    decode steps (`stall_wait`) has them held to that step (`_hold`). True if they joined or
    are held, and the stretch is priced on."""
    sched, kv = engine.scheduler, engine.kv
    s, bs = st.k, kv.block_size
    # (no finish at step s - 1 untold: `join_arrivals`. Told finishes are the stall's too: the
    # departures after s move with it, and `_priced_on` schedules their notices again)
    last = st.stalls[-1][0] if st.stalls else None
    wait = sched.stall_wait(s, last)
    if wait:
        if not _hold(st, joins, s + wait):
            return False
        engine.num_held_arrivals += 1  # (held to a later step: nobody joined; step s is a decode step not yet limited)
        return _priced_on(engine, st, now_s, s - 1, 0, held=True)
    if not sched.stall_admits(joins, s, last, lambda: _running_at(st, s)):
        return False  # (before the block checks: vtc's checks mostly settle at once)
    blocks, kept = sched.join_blocks(joins)
    free = st.free_blocks - st.join_blocks - blocks - kept
    pops = st.blocks_bound(s, bs)
    if pops > free and (pops := st.blocks_needed(s, bs)) > free:
        return False
    step_s = stall_step_s(engine.perf, st, joins)
    if step_s is None:
        return False
    if st.held:  # (they waited from the step they were held at: one fewer from s on, as stepping's log)
        st.waiting_to = [*st.waiting_to, *[s] * st.held]
        st.held = 0
    _admit(engine, st, now_s, joins, blocks, step_s, st.stall)
    # (one prompt leaves the scalar state step s + 1's, as a lean join: priced on from it, a busy
    # replica among many `join_ahead` steps ahead, not a numpy chunk to a horizon arrival gaps away)
    return _priced_on(engine, st, now_s, s, len(joins))


def _hold(st: Stretch, joins: list, s2: int) -> bool:
    """The waiting requests `joins` wait in the stretch up to its step s2, where the policy's
    `schedule` may admit them (`stall_wait`): the steps before it decode the running requests
    whatever waits, as the stretch does, and the stretch is priced no further than s2, where
    its end asks again (`Engine._end_fast_forward`: `held`). Those held for the first time wait
    from step s = k on (the step log's waiting count). False if the running requests all leave
    before s2 (stepping's `schedule` then admits as soon as none runs) or its blocks would not
    fit (then the stretch ends where it was cut, as before)."""
    s = st.k
    if s2 >= st.kmax:
        return False
    if st._priced != s:  # (priced ahead: only steps up to s2 may be taken)
        st.truncate(s)
    st.kmax = s2
    st.final = False  # (extended up to s2 while nothing happens here, as a stretch that arrivals joined)
    new = len(joins) - st.held
    st.waiting_from += [s] * new
    st.held += new
    return True


def _running_at(st: Stretch, s: int) -> list:
    """The (request, tokens) of the requests running at the stretch's step s: a request's
    context at step j is ctx1 + j - 1, its computed tokens, one fewer than its tokens."""
    reqs, ctx1 = st.reqs, st.ctx1
    return [(reqs[i], ctx1[i] + s) for i, r in enumerate(st.remaining) if r > s]


def stall_step_s(perf, st: Stretch, joins: list) -> float | None:
    """The time of a prompt-only step s = k running `joins`' prompts alone (priced as stepping
    prices that step), with `st`'s scalar state brought to step s for `Stretch.stall`; None if
    the model has no scalar decode form (the steps after the stall are left to a new stretch)."""
    s = st.k
    if st._priced != s or st._f is None:
        st.truncate(s)  # (priced ahead by numpy chunks: the scalar state of step s, as for a join)
        st._sync()
    if st._f is False:
        return None
    step_fn = getattr(perf, "prompt_step_s", None) if len(joins) == 1 else None
    step_s = step_fn(0, joins[0][1], 0) if step_fn is not None else None  # (its form: the same floats)
    if step_s is None:
        step_s = perf.step_time_s([(n, 0) for _, n in joins], [])  # (`_start_step`'s call for that step)
    return step_s


def _join_one(engine, st: Stretch, now_s: float, joins: list, blocks: int, num_running: int) -> None:
    """The join of one arrival into a stretch whose scalar pricing state is that of the join
    step s (`st._priced == s`): `_join_step_s`, `Scheduler.join`, the request's first new block
    and `Stretch.join` with one pass fewer each (the same values: `tests/replica/test_stretch_join.py`
    runs both paths). Every arrival at a busy replica comes here: its cost is the run's."""
    s = st.k
    (req, n), = joins
    perf = engine.perf
    step_fn = getattr(perf, "prompt_step_s", None)
    step_s = step_fn(num_running, n, st._ctx_sum) if step_fn is not None else None
    if step_s is None:  # (no affine form: `step_time_s` over the decodes' contexts)
        step_s = _join_step_s(perf, st, s, num_running, joins)
    engine.scheduler.join(joins, st.out)
    if req.first_scheduled_s is None:
        req.first_scheduled_s = now_s
    kv = engine.kv
    bs = kv.block_size
    # (`first_new_block_steps` of the request just admitted, its ctx1 n - s)
    st.join_one(req, n, kv.num_blocks_of(req.id) * bs - (n - s) + 1, blocks, step_s,
                engine._decode_forms(len(st.reqs) + 1), bs)


def _join_step_s(perf, st: Stretch, s: int, num_running: int, joins: list) -> float:
    """The time of step s: the `num_running` decodes still running and the joining prompts
    (none cached): `prompts_at_s`."""
    return prompts_at_s(perf, st, s, num_running, [(n, 0) for _, n in joins])


def prompts_at_s(perf, st: Stretch, s: int, num_running: int, chunks: list[tuple[int, int]]) -> float:
    """The time of step s: the `num_running` decodes still running (contexts ctx1 + s - 1) and
    the prompts' chunks ((tokens, context) in step order). Without sliding windows
    `step_time_s` reads the decodes' contexts only through their number and sum, which the
    pricing holds when its scalar state is step s's: the perf model's forms of such a step
    price it from the sum (bit-identical, no pass over the batch, and no chunk form built for
    one use: the batch size and the prompts vary from join to join); else `step_time_s` over
    the decodes' contexts."""
    if st._f is not None and st._priced == s and (num_running or len(chunks) == 1):
        if len(chunks) == 1:
            (n, cached), = chunks
            form = getattr(perf, "prompt_step_s", None)
            step_s = form(num_running, n, st._ctx_sum, cached) if form is not None else None
        else:
            form = getattr(perf, "prompts_step_s", None)
            step_s = form(chunks, num_running, st._ctx_sum) if form is not None else None
        if step_s is not None:
            return step_s
    return perf.step_time_s(chunks, [c + s - 1 for c, r in zip(st.ctx1, st.remaining) if r > s])


def spec_join_arrivals(engine, st: SpecStretch, now_s: float) -> bool:
    """At `now_s`, the end of the speculative stretch `st` (cut by arrivals): admit the
    waiting requests into it if stepping would admit them whole at the next step, and price it
    on. True if they joined (its end event is rescheduled); False changes nothing read later
    (the cut stretch's running state may be rewound: it is applied from its per-step lists)."""
    sched = engine.scheduler
    held = st.held_arrivals  # (waiting up to `kmax`, the step where they may join: `SpecStretch.hold`)
    if (not st.through or st.prompt is not None or st.num_waiting or len(st.waiting_from) != held or st._extra_step
            or now_s >= st._until_s or (st.kmax < len(st.ends) if held else st.kmax != UNLIMITED_STEPS)
            or st._perf is not engine.perf or engine.ports is not None or len(sched.running) != len(st.reqs)):
        return False  # (a policy whose order holds up to a number of steps never joins; one whose
        # order holds up to a time, only before it)
    st.rewind()  # (to the last step kept: the step s to price follows it)
    act = st._active
    if len(st.reqs) - len(act) > len(act) + MAX_EXTRA_DEPARTED:
        return False  # mostly requests that left: apply it, the next stretch holds those running
    joins = sched.arrivals_join(len(act))
    if not joins or any(req.output_len < 2 for req, _ in joins):
        return False  # (a one-token request would finish in its prompt's step: left to stepping)
    stall = sched.stalls_decodes  # (a prefill-first policy: the prompts' step runs them alone)
    if stall:
        s, last = len(st.ends), st.last_stall()
        if wait := sched.stall_wait(s, last):  # (vtc's count: they wait, the same decodes running, to step s + wait)
            if not st.hold(len(joins), s + wait):
                return False
            engine.num_held_arrivals += 1
            return _spec_priced_on(engine, st)
        if not sched.stall_admits(joins, s, last, st.running_at):
            return False
    reqs = st.reqs
    grown = SchedulerOutput([(reqs[i], 1) for i in act] + joins)
    if sched.repeat_order(grown) is None:
        return False  # the steps after the join may list the grown batch in another order
    until_s = st._until_s
    if until_s != math.inf or sched.reorders_running:
        # the newcomers' order may hold for less long than the running ones' (an Autellix call
        # joins at level 0 and leaves it after the first threshold's service, also where every
        # running call is at the top level, whose order holds for good)
        until_s = min(until_s, sched.join_order_limit(joins, now_s))
        if until_s <= now_s:
            return False
    blocks, kept = sched.join_blocks(joins)
    step = st._stall_step(joins, blocks + kept) if stall else st._join_step(joins, blocks + kept)
    if step is None:  # the blocks of step s and the prompts do not fit in those free at the start
        if not sched.holds_blocked_head(joins, st.free_at_boundary()):
            return False
        # nor in those stepping has free there: the head waits for a finish (orca's reservation)
        st.hold_waiting(sched.num_waiting)
        engine.num_held_arrivals += 1
        return _spec_priced_on(engine, st)
    st._until_s = until_s
    sched.join(joins, st.out)  # (listed in the output the stretch's end hands `end_step`)
    for req, _ in joins:
        if req.first_scheduled_s is None:
            req.first_scheduled_s = now_s
    index = {id(reqs[i]): i for i in act}
    index.update((id(req), len(reqs) + j) for j, (req, _) in enumerate(joins))
    order = [index[id(r)] for r in sched.repeat_order(grown) if id(r) in index]  # (trtllm: `running`, departed too)
    if len(order) != len(index):
        raise AssertionError("repeat_order does not list the grown batch")
    st.join(joins, blocks, step, order, engine.kv, stall)
    engine.num_joined_arrivals += len(joins)
    return _spec_priced_on(engine, st)


def _spec_priced_on(engine, st: SpecStretch) -> bool:
    """Price `st` on up to the next event anywhere (as `spec_fast_forward`) and reschedule its end: True."""
    st.price(engine._own_horizon_s())
    engine._schedule_stretch_end(st)
    return True


def departs_together(st: Stretch, s: int) -> bool:
    """Do two of the stretch's requests leave at step s (their last token)? A stretch of a policy
    that reorders its batch ends before such a step (`policy_stops.end_before_shared_departure`),
    so a join there, which would run step s inside the stretch, is refused."""
    rem, r = st._sorted_rem, s + 1
    i = bisect_left(rem, r)
    return i + 1 < len(rem) and rem[i + 1] == r
