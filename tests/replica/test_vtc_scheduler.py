"""VTC driven step by step: counters, lift, mini-batches every max_wait_tokens, future peak."""

from __future__ import annotations

from tests.factories import make_engine, make_request
from tests.replica.test_vllm_scheduler import run_logged


def test_least_counter_tenant_is_admitted_and_charged():
    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="vtc", max_num_seqs=2, fast_forward=False,
                                                params={"max_wait_tokens": 2})
    heavy = [make_request(i, 10, 4, tenant="a") for i in range(4)]
    light = [make_request(10 + i, 10, 4, tenant="b") for i in range(2)]
    steps = run_logged(engine, loop, heavy + light)
    # Mini-batches alternate tenants while both are backlogged; each runs alone (decodes wait),
    # and a new one is considered only when the batch is empty or after 2 decode steps.
    assert steps[0] == [(0, 10), (10, 10)]
    assert steps[1:4] == [[(0, 1), (10, 1)]] * 3
    assert steps[4] == [(1, 10), (11, 10)]
    assert steps[8] == [(2, 10), (3, 10)]  # b has nothing left: a takes both slots
    # 10 input tokens x 1 + 3 decode steps x 2 per request.
    assert sched.counters == {"a": 4 * (10 + 6), "b": 2 * (10 + 6)}


def test_counter_lift_for_a_returning_tenant():
    engine, sched, *_ = make_engine(scheduler="vtc")
    sched.add_request(make_request(0, 10, 1, tenant="a"), 0.0)
    sched.counters["a"] = 500.0
    sched.add_request(make_request(1, 10, 1, tenant="b"), 1.0)
    assert sched.counters["b"] == 500.0  # b cannot bank the credit of its idle time
    engine, sched, *_ = make_engine(scheduler="vtc", params={"variant": "lcf"})
    sched.add_request(make_request(0, 10, 1, tenant="a"), 0.0)
    sched.counters["a"] = 500.0
    sched.add_request(make_request(1, 10, 1, tenant="b"), 1.0)
    assert sched.counters["b"] == 0.0  # least counter first: no lift


def test_future_peak_check_admits_one_at_a_time_when_memory_is_short():
    # 4 blocks of 16 = 64 tokens; each request peaks at 40 tokens (3 blocks); two would need
    # max(20 + 20, 41 + 2 * 19) = 79 tokens -> 5 blocks + 1 of rounding > 4.
    engine, sched, kv, loop, done = make_engine(num_blocks=4, scheduler="vtc", fast_forward=False)
    steps = run_logged(engine, loop, [make_request(0, 20, 20), make_request(1, 20, 20)])
    assert steps[0] == [(0, 20)]
    assert all(s == [(0, 1)] for s in steps[1:20])
    assert steps[20] == [(1, 20)]
    assert all(r.num_preemptions == 0 for r in done)


def test_fcfs_variant_ignores_counters():
    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="vtc", max_num_seqs=2, fast_forward=False,
                                                params={"variant": "fcfs", "max_wait_tokens": 2})
    heavy = [make_request(i, 10, 4, tenant="a") for i in range(4)]
    light = [make_request(10 + i, 10, 4, tenant="b", arrival=1e-6) for i in range(2)]
    steps = run_logged(engine, loop, heavy + light)
    assert steps[0] == [(0, 10), (1, 10)]
    assert steps[4] == [(2, 10), (3, 10)]
    assert steps[8] == [(10, 10), (11, 10)]
