"""Earliest deadline first, driven step by step."""

from __future__ import annotations

import pytest

from tests.factories import make_engine, make_request, serve
from tests.replica.test_vllm_scheduler import run_logged


def test_earliest_ttft_deadline_is_admitted_first():
    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="edf", max_num_batched_tokens=64,
                                                fast_forward=False)
    relaxed, urgent = make_request(0, 100, 3, ttft_slo_s=10), make_request(1, 30, 3, ttft_slo_s=0.01)
    steps = run_logged(engine, loop, [relaxed, urgent])
    assert steps[0] == [(1, 30), (0, 34)]  # FCFS would give the first 64 tokens to request 0
    # Request 1 has no TPOT target (deadline inf) once it has its first token: request 0's
    # TTFT deadline (10 s) comes first and takes the whole budget.
    assert steps[1] == [(0, 64)]
    assert steps[2] == [(0, 2), (1, 1)]


def test_running_requests_follow_their_next_token_deadline():
    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="edf", max_num_batched_tokens=64,
                                                fast_forward=False)
    reqs = [make_request(0, 20, 3, ttft_slo_s=1, tpot_slo_s=0.5), make_request(1, 20, 3, ttft_slo_s=1, tpot_slo_s=0.01),
            make_request(2, 100, 3, ttft_slo_s=0.02)]
    steps = run_logged(engine, loop, reqs)
    assert steps[0] == [(2, 64)]
    assert steps[1] == [(2, 36), (0, 20), (1, 8)]
    assert steps[3] == [(1, 1), (0, 1), (2, 1)]  # 1's next token is due in 10 ms, 0's in 500 ms


def test_default_slos_apply_to_requests_without_their_own():
    engine, sched, kv, *_ = make_engine(scheduler="edf", params={"default_ttft_s": 2.0})
    assert sched.deadline_s(make_request(0, 8, 1, arrival=1.0)) == 3.0
    assert sched.deadline_s(make_request(1, 8, 1, arrival=1.0, ttft_slo_s=0.5)) == 1.5


@pytest.mark.parametrize("scheduler,params", [
    ("edf", {"default_ttft_s": 0.05, "default_tpot_s": 0.02}),
    ("priority", {}),
])
def test_stored_waiting_keys_equal_fresh_keys_at_every_step(scheduler, params):
    """The waiting queue is sorted on keys stored when each request entered it; they must be
    the keys of now (deadlines of waiting requests, and priorities, do not move), through
    arrivals, preemptions (which re-enter with a deadline from their last token) and finishes."""
    engine, sched, kv, loop, done = make_engine(num_blocks=30, scheduler=scheduler, max_num_seqs=4,
                                                fast_forward=False, params=params)
    reqs = [make_request(i, 8 + 8 * (i % 4), 6 + 7 * (i % 3), arrival=0.003 * i, priority=(7 * i) % 5)
            for i in range(40)]
    schedule, checked = sched.schedule, []

    def checking(now_s):
        assert all(sched._waiting_keys[r] == sched.key(r) for r in sched.waiting)
        checked.append(len(sched.waiting))
        return schedule(now_s)

    sched.schedule = checking
    serve(engine, loop, reqs)
    assert len(done) == 40 and sum(r.num_preemptions for r in reqs) > 0 and max(checked) > 10
    assert not sched._waiting_keys  # forgotten when they finished


def test_keys_are_static_only_while_no_deadline_exists():
    """No target anywhere: every key is (inf, arrival, id) and a blocked head may hold the batch
    (fast-forward); a request with its own SLO makes the keys time-varying until it leaves."""
    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="edf", fast_forward=False)
    plain, timed = make_request(0, 20, 3), make_request(1, 20, 3, tpot_slo_s=0.1)
    assert sched.static_keys
    engine.add_request(plain, 0.0)
    assert sched.static_keys and sched.arrival_keeps_batch(timed) is False  # (no blocked head: no)
    engine.add_request(timed, 0.0)
    assert not sched.static_keys and sched.sort_key() == sched.key
    loop.run()
    assert len(done) == 2 and sched.static_keys  # both finished: static again
    with_defaults, *_ = make_engine(num_blocks=100, scheduler="edf", params={"default_ttft_s": 1.0})
    assert not with_defaults.scheduler.static_keys
