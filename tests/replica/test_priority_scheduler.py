"""Strict priority with preemption, driven step by step."""

from __future__ import annotations

import pytest

from servesim.workload.request import RequestState
from tests.factories import make_engine, make_request, serve
from tests.replica.test_vllm_scheduler import run_logged


def test_lower_priority_is_preempted_when_memory_runs_out():
    engine, sched, kv, loop, done = make_engine(num_blocks=8, scheduler="priority", max_num_batched_tokens=128,
                                                fast_forward=False)
    low, high = make_request(0, 48, 20, priority=5), make_request(1, 64, 20, priority=0, arrival=0.02)
    steps = run_logged(engine, loop, [low, high])
    assert steps[:3] == [[(0, 48)], [(0, 1)], [(0, 1), (1, 64)]]
    # Step 3: high needs a 5th block (65 tokens) while low holds 4 of 8: low is preempted.
    assert steps[3] == [(1, 1)]
    assert all(s == [(1, 1)] for s in steps[4:22])
    # low re-prefills its prompt + 3 generated tokens, less 2 of its 3 full blocks (high's 6th
    # block evicted the third)
    assert steps[22] == [(0, 51 - 32)]
    assert low.num_preemptions == 1 and high.num_preemptions == 0
    assert low.state == high.state == RequestState.FINISHED and kv.num_free_blocks == 8


def test_higher_priority_arrival_takes_the_last_sequence_slot():
    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="priority", max_num_seqs=1,
                                                fast_forward=False)
    low, high = make_request(0, 8, 5, priority=5), make_request(1, 8, 5, priority=0, arrival=0.015)
    steps = run_logged(engine, loop, [low, high])
    assert steps[:3] == [[(0, 8)], [(0, 1)], [(1, 8)]]  # low's decode is refunded, high admitted
    assert steps[7] == [(0, 10)]
    assert low.num_preemptions == 1


def test_without_preemption_the_higher_priority_request_waits():
    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="priority", max_num_seqs=1,
                                                fast_forward=False, params={"preemption": False})
    low, high = make_request(0, 8, 5, priority=5), make_request(1, 8, 5, priority=0, arrival=0.015)
    steps = run_logged(engine, loop, [low, high])
    assert steps[:6] == [[(0, 8)]] + [[(0, 1)]] * 4 + [[(1, 8)]]
    assert low.num_preemptions == 0


def test_waiting_order_is_priority_then_arrival():
    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="priority", max_num_seqs=2,
                                                fast_forward=False)
    reqs = [make_request(0, 8, 1, priority=2), make_request(1, 8, 1, priority=1), make_request(2, 8, 1, priority=1)]
    steps = run_logged(engine, loop, reqs)
    assert steps[0] == [(1, 8), (2, 8)]
    assert steps[1] == [(0, 8)]


@pytest.mark.parametrize("scheduler,params", [
    ("priority", {}), ("edf", {"default_ttft_s": 0.05, "default_tpot_s": 0.01}),
    ("autellix", {"base_quantum_s": 0.02, "starvation_ratio": 0.5}),
    ("autellix", {"base_quantum_s": 0.02, "mode": "atlas", "preemption_mode": "recompute"}),
])
def test_waiting_queue_kept_sorted_between_steps(scheduler, params):
    """A queue left clean (not re-sorted) is in key order at every decision, and the runs
    did skip sorts, with requests joining in the middle and preempted ones re-entering."""
    engine, sched, kv, loop, done = make_engine(num_blocks=40, scheduler=scheduler, max_num_seqs=4,
                                                fast_forward=False, params=params)
    reqs = [make_request(i, 8 + 8 * (i % 3), 6 + 5 * (i % 4), arrival=0.004 * i, priority=(i * 7) % 3,
                         program_id=i % 5 if i % 2 else None) for i in range(60)]
    schedule, seen = sched.schedule, {"clean": 0, "inserted": 0}

    def checking(now_s):
        held = list(sched.waiting)
        if sched.waiting.clean:
            assert held == sorted(held, key=sched.key)
            seen["clean"] += 1
            seen["inserted"] += sum(1 for a, b in zip(held, held[1:]) if a.arrival_s > b.arrival_s)
        return schedule(now_s)

    sched.schedule = checking
    serve(engine, loop, reqs)
    assert len(done) == 60 and sum(r.num_preemptions for r in reqs) > 0
    assert seen["clean"] > 20 and seen["inserted"] > 0
