"""Earliest deadline first, driven step by step."""

from __future__ import annotations

from tests.factories import make_engine, make_request
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
