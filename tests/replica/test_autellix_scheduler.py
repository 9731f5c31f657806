"""Autellix driven step by step: program-level attained service in a multi-level queue."""

from __future__ import annotations

import pytest

from servesim.replica.schedulers.autellix_accounting import LEVEL_SHIFT, arrival_order
from servesim.workload.request import RequestState
from tests.factories import make_engine, make_request
from tests.replica.test_vllm_scheduler import run_logged


def _key(level: int, req) -> int:
    """A call's key at `level`: (level, arrival_s, id) as one int."""
    return level << LEVEL_SHIFT | arrival_order(req)


def test_a_calls_key_is_ordered_as_level_arrival_and_id():
    """A key (one int: `arrival_order` under the level) compares as the tuple (level, arrival_s,
    id) does: negative and signed-zero arrival times, ties broken by ids of either sign."""
    times = [0.0, -0.0, 5e-324, -5e-324, 1e-300, -1e-300, 0.5, -0.5, 3.25, -3.25, 1e300, -1e300, float("inf"),
             -float("inf")]
    ids = [0, 1, -1, 7, 2**63 - 1, -2**63]
    reqs = [make_request(i, 8, 4, arrival=t) for t in times for i in ids]
    keyed = [(level, r) for level in (0, 1, 6) for r in reqs]
    by_tuple = sorted(keyed, key=lambda e: (e[0], e[1].arrival_s, e[1].id))
    by_int = sorted(keyed, key=lambda e: _key(*e))
    assert [(lv, r.arrival_s, r.id) for lv, r in by_int] == [(lv, r.arrival_s, r.id) for lv, r in by_tuple]
    for a, b in zip(by_int, by_int[1:]):  # (equal tuples, -0.0 and 0.0's, give equal keys)
        same = (a[0], a[1].arrival_s, a[1].id) == (b[0], b[1].arrival_s, b[1].id)
        assert (_key(*a) == _key(*b)) == same


def test_a_new_program_preempts_a_program_with_more_service():
    # Thresholds 0.02, 0.04, 0.08 s of engine time; each toy step takes ~10 ms.
    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="autellix", max_num_seqs=1,
                                                fast_forward=False,
                                                params={"base_quantum_s": 0.02, "preemption_mode": "recompute"})
    old = make_request(0, 8, 10, program_id=1)
    new = make_request(1, 8, 10, program_id=2, arrival=0.05)
    steps = run_logged(engine, loop, [old, new])
    assert steps[:5] == [[(0, 8)]] + [[(0, 1)]] * 4  # program 1 reaches level 2 (>= 0.04 s)
    assert steps[5] == [(1, 8)]  # program 2 arrives in level 0 and takes the only slot
    assert steps[6:13] == [[(1, 1)]] * 7
    # Program 2 passes 0.08 s (level 3) while program 1 waits in level 2: 1 comes back.
    assert steps[13] == [(0, 13)]
    assert steps[18] == [(1, 16)]  # same level: the running call keeps its slot until it ends
    assert old.num_preemptions == 1 and new.num_preemptions == 1
    assert old.state == new.state == RequestState.FINISHED


def test_plas_counts_service_of_completed_calls_of_the_program():
    engine, sched, *_ = make_engine(scheduler="autellix", params={"base_quantum_s": 1.0})
    first = make_request(0, 8, 1, program_id=7)
    sched.add_request(first, 0.0)
    sched.service_s[7] = 3.0  # program 7 already ran 3 s
    follow_up = make_request(1, 8, 1, program_id=7, parents=(0,), call_index=1)
    fresh = make_request(2, 8, 1, program_id=8)
    sched.add_request(follow_up, 5.0)
    sched.add_request(fresh, 5.0)
    assert sched.level(follow_up) == 2  # thresholds 1, 2, 4 s: not the top queue
    assert sched.level(fresh) == 0


def test_atlas_uses_the_critical_path():
    engine, sched, *_ = make_engine(scheduler="autellix", params={"mode": "atlas", "base_quantum_s": 1.0})
    root = make_request(0, 8, 1, program_id=1)
    sched.add_request(root, 0.0)
    left, right = make_request(1, 8, 1, program_id=1, parents=(0,)), make_request(2, 8, 1, program_id=1, parents=(0,))
    sched.call_service_s[0] = 1.5
    sched.add_request(left, 1.0)
    sched.add_request(right, 1.0)
    sched.call_service_s[1] = 3.0
    sched.call_service_s[2] = 0.2
    join = make_request(3, 8, 1, program_id=1, parents=(1, 2))
    sched.add_request(join, 5.0)
    assert sched.attained_s(left) == pytest.approx(4.5)
    assert sched.attained_s(right) == pytest.approx(1.7)  # the lighter thread goes first
    assert sched.attained_s(join) == pytest.approx(4.5)  # max over parents


def test_starving_program_returns_to_the_top_queue():
    engine, sched, kv, loop, done = make_engine(scheduler="autellix", params={"starvation_ratio": 0.5})
    req = make_request(0, 8, 1, program_id=3)
    sched.add_request(req, 0.0)
    sched.service_s[3] = 2.0
    assert sched.level(req) == 3  # thresholds 0.5, 1, 2, ... s
    from servesim.replica.schedulers.base import SchedulerOutput

    sched._step_start_s = 0.0
    sched.on_step_end(SchedulerOutput(), 1.0)  # waited 1 s >= 0.5 x 2 s
    assert sched.level(req) == 0


def test_preempted_call_is_swapped_out_and_back_in_by_queue_order():
    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="autellix", max_num_seqs=1,
                                                fast_forward=False, params={"base_quantum_s": 0.02})
    old = make_request(0, 8, 10, program_id=1)
    new = make_request(1, 8, 3, program_id=2, arrival=0.05)
    swaps = []
    schedule = sched.schedule

    def spy(now_s):
        out = schedule(now_s)
        swaps.append(([r.id for r in out.swapped_out], [r.id for r in out.swapped_in]))
        return out

    sched.schedule = spy
    steps = run_logged(engine, loop, [old, new])
    assert steps[5] == [(1, 8)] and swaps[5] == ([0], [])  # old's KV goes to the CPU tier
    assert steps[8] == [(0, 1)] and swaps[8] == ([], [0])  # new finished: old is swapped back in
    assert old.num_computed_tokens == old.num_tokens - 1  # nothing recomputed
    assert old.state == new.state == RequestState.FINISHED and kv.num_free_blocks == 100


@pytest.mark.parametrize("params", [
    {"base_quantum_s": 0.02, "starvation_ratio": 0.5},
    {"mode": "atlas", "base_quantum_s": 0.02, "starvation_ratio": 0.5, "preemption_mode": "recompute"},
])
def test_kept_keys_equal_fresh_keys_at_every_step(params):
    """The keys kept between steps (updated only for programs served or promoted) are the keys
    computed from scratch, before every decision: programs with parallel calls, calls of one
    program waiting while another runs, promotions and preemptions all happen here."""
    engine, sched, kv, loop, done = make_engine(num_blocks=40, scheduler="autellix", max_num_seqs=3,
                                                fast_forward=False, params=params)
    reqs = [make_request(i, 8 + 8 * (i % 3), 6 + 5 * (i % 4), arrival=0.004 * i, program_id=i % 5,
                         parents=(i - 5,) if i >= 5 else ()) for i in range(30)]
    schedule, checked = sched.schedule, []

    def checking(now_s):
        held = [*sched.running, *sched.waiting, *sched.swapped]
        assert all(sched.key(r) == _key(sched.level(r), r) for r in held)
        checked.append(len(held))
        return schedule(now_s)

    sched.schedule = checking
    steps = run_logged(engine, loop, reqs)
    assert len(done) == 30 and all(r.state == RequestState.FINISHED for r in reqs)
    assert sum(r.num_preemptions for r in reqs) > 0  # the levels did reorder running calls
    assert sum(sched.discount_s.values()) > 0  # and some program was promoted
    assert max(checked) > 10 and len(checked) >= len(steps) > 100


def test_an_idle_lone_calls_key_stands_while_it_waits_for_budget():
    """A lone call running but left out of a step (a prompt chunked behind another's) is keyed
    at the step's end; while it stays idle nothing moves its service, so later passes leave its
    key as it is (`_idle_keyed`). Checked against the key from its service before every
    decision; the run is the same step for step as one that keys it at every step."""
    from bisect import bisect_right

    def run(stand: bool):
        engine, sched, kv, loop, done = make_engine(num_blocks=200, scheduler="autellix", max_num_seqs=8,
                                                    max_num_batched_tokens=32, fast_forward=False,
                                                    params={"base_quantum_s": 0.01})
        reqs = [make_request(i, 40 + 30 * (i % 4), 5 + 3 * (i % 5), arrival=0.002 * i) for i in range(30)]
        schedule, step_end, stood = sched.schedule, sched.on_step_end, []

        def checking(now_s):
            for r in sched._idle_keyed & sched._idle:
                p = sched.program(r)
                x = max(sched.service_s[p] - sched.discount_s.get(p, 0.0), 0.0)
                assert sched._keys[r] == _key(bisect_right(sched.thresholds, x), r)
                stood.append(r.id)
            return schedule(now_s)

        def keying_all(output, now_s):
            if not stand:
                sched._idle_keyed = frozenset()
            step_end(output, now_s)

        sched.schedule, sched.on_step_end = checking, keying_all
        steps = run_logged(engine, loop, reqs)
        assert len(done) == 30 and all(r.state == RequestState.FINISHED for r in reqs)
        return steps, [(r.id, r.first_token_s, r.finish_s) for r in reqs], stood

    steps, outcomes, stood = run(True)
    assert run(False)[:2] == (steps, outcomes)
    assert len(stood) > 50 and len(set(stood)) > 5


@pytest.mark.parametrize("preemption_mode, mode", [("swap", "plas"), ("recompute", "plas"), ("swap", "atlas")])
def test_lazy_waiting_time_of_lone_calls_is_exactly_the_per_step_sum(preemption_mode, mode):
    """Lone calls (no program, no session) have their waiting time added when they stop
    waiting or may be due for promotion, and their service when they stop running, miss a
    step or may reach the next level; the same calls as one-call sessions are accounted at
    every step (one-call programs: a one-call session's running call is lazy too); one that
    misses a step stays eager until it is scheduled again; one due to reach its next level is
    keyed from its sums, kept lazy (`_rekey_due`). Same schedule, and bit-identical waiting
    times, services and promotions."""
    def run(as_programs: bool):
        engine, sched, kv, loop, done = make_engine(num_blocks=24, scheduler="autellix", max_num_seqs=3,
                                                    fast_forward=False, num_cpu_blocks=16,
                                                    params={"base_quantum_s": 0.01, "starvation_ratio": 1.5,
                                                            "preemption_mode": preemption_mode, "mode": mode})
        # (every 7th prompt takes several chunks: the running calls after it miss steps)
        reqs = [make_request(i, 8 + 8 * (i % 3) + (120 if i % 7 == 3 else 0), 4 + 9 * (i % 4), arrival=0.006 * i,
                             program_id=1000 + i if as_programs else None) for i in range(40)]
        schedule, most_lazy, served_lazy, running_lazy, idle = sched.schedule, [], [], [], []

        def spy(now_s):
            running_lazy.append(len(sched._run_lazy))
            idle.append(len(sched._idle))
            most_lazy.append(len(sched._lazy))
            served_lazy.append(sum(due_s < float("inf") for _, due_s in sched._lazy.values()))
            return schedule(now_s)

        eager_lone, passes = sched._eager_lone_calls, {"short": 0, "walked": 0, "due": 0}

        def counted(settled):  # the pass over the queued calls: lone calls only, or the queue walked
            calls = eager_lone(settled)
            passes["walked" if calls is None else "short"] += 1
            passes["due"] += bool(settled) and calls is not None
            return calls

        rekey_due = sched._rekey_due

        def rekeyed(due, now_s):  # (lazy running calls due to reach their next level, keyed from their sums)
            passes["rekeyed"] = passes.get("rekeyed", 0) + len(due)
            return rekey_due(due, now_s)

        sched.schedule, sched._eager_lone_calls, sched._rekey_due = spy, counted, rekeyed
        steps = run_logged(engine, loop, reqs)
        by_call = lambda table: {(k[1] if type(k) is tuple else k) % 1000: v for k, v in table.items()}  # noqa: E731
        service = (by_call(sched.service_s), sched.call_service_s)
        return steps, [(r.finish_s, r.num_preemptions) for r in reqs], by_call(sched.wait_s), \
            by_call(sched.discount_s), service, max(most_lazy), max(served_lazy), max(running_lazy), passes, \
            max(idle)

    lazy, eager = run(False), run(True)
    assert lazy[:5] == eager[:5]
    assert lazy[5] > 5 and eager[5] == 0  # the lone calls did wait lazily; the programs never
    assert lazy[6] > 0  # also calls with service, until they were due for promotion
    assert lazy[7] == 3 and eager[7] == 0  # every running lone call was credited lazily at times
    assert len(lazy[3]) > 3  # promotions happened
    assert len(lazy[4][0]) == 40 and max(lazy[4][0].values()) > 0.04  # some passed several levels
    assert sum(n for _, n in lazy[1]) > 5
    # the lone calls' passes took only the calls queued since or due, never the whole queue;
    # the programs' walked it (but when nothing waited)
    assert lazy[8]["walked"] == 0 and lazy[8]["short"] > 300 and lazy[8]["due"] > 0
    assert lazy[8]["rekeyed"] > 20 and "rekeyed" not in eager[8]  # (running calls past levels, kept lazy)
    assert eager[8]["walked"] > 300 and eager[8]["due"] == 0
    # running lone calls that missed steps behind a chunked prompt stayed eager until scheduled
    # again (`_idle`) instead of being made lazy and settled at each step; the programs never did
    assert lazy[9] >= 2 and eager[9] == 0


def test_a_sessions_only_call_is_credited_lazily_as_its_program_would_be_eagerly():
    """A session's call is credited lazily while it is the session's only call held (turns
    overlap here: a call arriving while its session's other call runs or waits makes that
    one eager again, credited first); the same calls as programs (always eager) give the same
    schedule and bit-identical services, waiting times and promotions."""
    def run(as_sessions: bool):
        engine, sched, kv, loop, done = make_engine(num_blocks=24, scheduler="autellix", max_num_seqs=3,
                                                    fast_forward=False, num_cpu_blocks=16,
                                                    params={"base_quantum_s": 0.01, "starvation_ratio": 1.5})
        job = {"session_id" if as_sessions else "program_id": None}
        reqs = []
        for i in range(40):  # 8 jobs of 5 calls, some far apart (alone), some overlapping
            job[next(iter(job))] = 1000 + i % 8
            arrival = 0.05 * (i // 8) + (0.0 if i % 8 < 4 else 0.001 * i) + 0.3 * (i % 8 == 7) * (i // 8)
            reqs.append(make_request(i, 8 + 8 * (i % 3), 4 + 9 * (i % 4), arrival=arrival, **job))
        job[next(iter(job))] = 2000  # a long call, and its job's next call arriving while it runs alone
        reqs += [make_request(40, 8, 90, arrival=0.6, **job), make_request(41, 8, 5, arrival=0.9, **job)]
        schedule, lazy_turns = sched.schedule, []
        hold, settled_on_arrival = sched._hold, []

        def spy(now_s):
            lazy_turns.append(len(sched._lazy_turn))
            return schedule(now_s)

        def holding(req):
            settled_on_arrival.append(sched.program(req) in sched._lazy_turn)
            hold(req)

        sched.schedule, sched._hold = spy, holding
        steps = run_logged(engine, loop, reqs)
        by_job = lambda table: {(k[1] if type(k) is tuple else k): v for k, v in table.items()}  # noqa: E731
        return (steps, [(r.finish_s, r.num_preemptions) for r in reqs], by_job(sched.wait_s),
                by_job(sched.discount_s), by_job(sched.service_s), sched.call_service_s,
                max(lazy_turns), sum(settled_on_arrival), sched._calls_held)

    lazy, eager = run(True), run(False)
    assert lazy[:6] == eager[:6]
    assert lazy[6] > 0 and eager[6] == 0  # session calls were credited lazily, programs' never
    assert lazy[7] > 0  # a call arrived while its session's other call ran lazily
    assert len(lazy[3]) > 0 and sum(n for _, n in lazy[1]) > 0  # promotions and preemptions
    assert lazy[8] == {}  # every call held was let go


def test_step_sums_equal_left_to_right_float_sums_and_grow():
    """`StepSums` (the lazy waiting times): each slot closes at its start value plus the
    steps ended since, added left to right (bit-identical to `reduce`, not to a pairwise or
    compensated sum), through a growth of its array and reused slots."""
    import random
    from functools import reduce
    from operator import add

    from servesim.replica.schedulers.autellix_accounting import StepSums

    rng = random.Random(7)
    sums, log, open_ = StepSums(capacity=4), [], {}
    for step in range(300):
        if rng.random() < 0.6 or not open_:
            start = rng.choice([0.0, -0.0, rng.random() * 1e3, 1e16])
            open_[sums.open(start)] = (start, len(log))
        if rng.random() < 0.4:
            slot = rng.choice(list(open_))
            start, i = open_.pop(slot)
            got = sums.close(slot)
            want = reduce(add, log[i:], start)
            assert got == want and str(got) == str(want)  # (the sign of a zero too)
        dt = rng.random() * 0.05 + 1e-7
        log.append(dt)
        sums.add(dt)
    assert len(sums._acc) >= 64 and len(open_) > 4  # it grew past its first 4 slots
    assert reduce(add, log, 1e16) != 1e16 + sum(log[1:], log[0])  # (the order does matter here)


def test_waiting_queue_kept_in_key_order_by_moving_the_rekeyed_calls(monkeypatch):
    """Promotions and served programs change waiting calls' keys: the queue moves those calls
    to their new places (`SortedWaiting.rekeyed`) instead of being sorted again, and before
    every decision it is the queue sorted by the fresh keys, with its stored keys fresh."""
    from servesim.replica.schedulers.queues import SortedWaiting

    engine, sched, kv, loop, done = make_engine(num_blocks=40, scheduler="autellix", max_num_seqs=3,
                                                fast_forward=False, params={"base_quantum_s": 0.02,
                                                                            "starvation_ratio": 0.5})
    reqs = [make_request(i, 8 + 8 * (i % 3), 6 + 5 * (i % 4), arrival=0.004 * i,
                         program_id=i % 4 if i % 3 else None) for i in range(40)]
    schedule, moves, checked = sched.schedule, [], []
    rekeyed = SortedWaiting.rekeyed

    def spy_rekeyed(queue, moved, keys):
        if queue.clean and 0 < len(moved) <= 16:
            moves.append(len(moved))
        rekeyed(queue, moved, keys)

    def checking(now_s):
        waiting = list(sched.waiting)
        if sched.waiting.clean:
            assert waiting == sorted(waiting, key=lambda r: (sched.level(r), r.arrival_s, r.id))
            checked.append(len(waiting))
        assert all(sched.key(r) == _key(sched.level(r), r) for r in waiting)
        return schedule(now_s)

    sched.schedule = checking
    monkeypatch.setattr(SortedWaiting, "rekeyed", spy_rekeyed)
    run_logged(engine, loop, reqs)
    assert len(done) == 40 and all(r.state == RequestState.FINISHED for r in reqs)
    assert len(moves) > 5 and sum(moves) > len(moves)  # calls were moved, several at once too
    assert sum(sched.discount_s.values()) > 0 and max(checked) > 10


def test_a_call_handed_over_is_keyed_at_the_next_step_start():
    # `begin_step` keys the running calls only after a hand-over (every other call has its key
    # from before it was queued): the handed-over call gets its key there, with the level of
    # its program's service, and the calls already running keep theirs.
    engine, sched, *_ = make_engine(scheduler="autellix", params={"base_quantum_s": 1.0})
    first = make_request(0, 8, 4, program_id=7)
    sched.add_request(first, 0.0)
    sched.schedule(0.0)
    sched.service_s[7] = 1.5  # program 7 has run 1.5 s: its next call is in level 1
    moved = make_request(1, 8, 4, program_id=7, parents=(0,), call_index=1)
    sched.add_transferred(moved, 0.1)
    assert moved in sched.running and moved not in sched._keys
    before = sched._keys[first]
    sched.begin_step(0.2)
    assert sched._keys[moved] == _key(1, moved)
    assert sched._keys[first] == before  # (keyed when it was added; a step end re-keys it)
