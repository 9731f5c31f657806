"""Orca driven step by step: full-length reservation, mixed prefill + decode, no preemption."""

from __future__ import annotations

from servesim.workload.request import RequestState
from tests.factories import make_engine, make_request
from tests.replica.test_vllm_scheduler import run_logged


def test_max_reservation_limits_the_batch_and_blocks_the_head():
    # max_model_len 128 = 8 blocks reserved per request: 20 blocks hold two requests.
    engine, sched, kv, loop, done = make_engine(num_blocks=20, scheduler="orca", max_model_len=128,
                                                fast_forward=False)
    reqs = [make_request(i, 10, 3) for i in range(3)]
    steps = run_logged(engine, loop, reqs)
    assert steps[0] == [(0, 10), (1, 10)]  # whole prompts, no token budget
    assert steps[1] == [(0, 1), (1, 1)]
    assert steps[2] == [(0, 1), (1, 1)]
    assert steps[3] == [(2, 10)]  # admitted only once both reservations are released
    assert len(steps) == 6
    assert all(r.state == RequestState.FINISHED and r.num_preemptions == 0 for r in reqs)
    assert kv.num_free_blocks == 20


def test_new_prompt_joins_running_decodes():
    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="orca", max_model_len=128,
                                                fast_forward=False)
    steps = run_logged(engine, loop, [make_request(0, 10, 4), make_request(1, 20, 2, arrival=0.005)])
    assert steps[0] == [(0, 10)]
    assert steps[1] == [(0, 1), (1, 20)]  # selective batching: a prefill mixed with a decode
    assert steps[2] == [(0, 1), (1, 1)]


def test_oracle_and_pow2_reservations():
    engine, sched, kv, *_ = make_engine(num_blocks=100, scheduler="orca", max_model_len=4096,
                                        params={"reservation": "pow2"})
    req = make_request(0, 10, 20)
    assert sched.reserved_tokens(req) == 10 + 32
    sched.params = sched.Params(reservation="oracle")
    assert sched.reserved_tokens(req) == 30
    sched.params = sched.Params(reservation="max")
    assert sched.reserved_tokens(req) == 100 * 16  # max_model_len capped by the whole cache
    assert sched.reserved_tokens(make_request(1, 10, 20, max_tokens=50)) == 60
