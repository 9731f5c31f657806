"""vLLM's running pass (`VLLMSteps.schedule_running`) takes the decodes after a prompt chunk
or an eviction in one `allocate_leading_decodes` call (vLLM v0's too), and VTC's decode step
and TensorRT-LLM's micro-batch their leading decodes (FastSwitch's walk too, beside swap-ins
in flight): the same run as allocating each request one by one, and the bulk calls do run (mid-pass:
not the step's first call)."""

from __future__ import annotations

import random

import pytest

from tests.factories import assert_same_run, make_engine, make_request, serve

NUM_BLOCKS = 80


def _requests():
    rng = random.Random(11)
    return [make_request(i, rng.randint(20, 300), rng.randint(5, 120), arrival=0.002 * i) for i in range(100)]


def _run(scheduler: str, bulk: bool):
    engine, sched, kv, loop, _ = make_engine(num_blocks=NUM_BLOCKS, scheduler=scheduler, max_num_seqs=32,
                                             max_num_batched_tokens=256, fast_forward=False)
    calls = {"pass": 0, "taken": 0, "mid_pass": 0, "mid_pass_taken": 0, "none_free": 0}
    lead = kv.allocate_leading_decodes
    schedule = sched.schedule

    def counted_lead(reqs):
        if not bulk:
            return 0  # the reference: every request allocated by `allocate_slots`, in order
        none_free = kv.num_free_blocks == 0
        k = lead(reqs)
        calls["taken"] += k
        calls["none_free"] += none_free and 0 < k < len(reqs)  # (those before the first that needs a block)
        if calls["pass"] > 0:  # not the pass's first call
            calls["mid_pass"] += 1
            calls["mid_pass_taken"] += k
        calls["pass"] += 1
        return k

    def counted_schedule(*args, **kw):
        calls["pass"] = 0
        return schedule(*args, **kw)

    kv.allocate_leading_decodes = counted_lead
    sched.schedule = counted_schedule
    reqs = _requests()
    serve(engine, loop, reqs)
    engine.drain(loop.now_s)
    kv.check_all_free()
    return engine, reqs, calls


@pytest.mark.parametrize("scheduler", ["vllm", "priority", "autellix", "vllm-v0"])
def test_bulk_decodes_after_prompts_and_evictions_match_one_by_one(scheduler):
    fast, fast_reqs, calls = _run(scheduler, bulk=True)
    slow, slow_reqs, _ = _run(scheduler, bulk=False)
    assert_same_run(fast, slow, fast_reqs, slow_reqs, num_blocks=NUM_BLOCKS)
    assert sum(r.num_preemptions for r in fast_reqs) > 10  # KV is tight: the pass evicts
    assert calls["mid_pass"] >= 20 and calls["mid_pass_taken"] >= 60  # and the bulk calls ran mid-pass
    # with no free block too: the decodes before the first that needs one (every call one by
    # one from there scanned the batch again before)
    assert calls["none_free"] >= 15


@pytest.mark.parametrize("scheduler", ["vtc", "trtllm"])
def test_decode_steps_in_bulk_match_one_by_one(scheduler):
    """VTC's decode step and TensorRT-LLM's micro-batch take their leading decodes in bulk."""
    fast, fast_reqs, calls = _run(scheduler, bulk=True)
    slow, slow_reqs, _ = _run(scheduler, bulk=False)
    assert_same_run(fast, slow, fast_reqs, slow_reqs, num_blocks=NUM_BLOCKS)
    assert calls["taken"] > 4_000  # most decode tokens were taken in bulk


def test_sarathi_decodes_in_bulk_match_one_by_one():
    """Sarathi's decode pass takes its decodes in bulk, again after a recomputed prompt amid
    them or a preemption: the same run as `allocate_slots` for each."""
    fast, fast_reqs, calls = _run("sarathi", bulk=True)
    slow, slow_reqs, _ = _run("sarathi", bulk=False)
    assert_same_run(fast, slow, fast_reqs, slow_reqs, num_blocks=NUM_BLOCKS)
    assert sum(r.num_preemptions for r in fast_reqs) > 10  # KV is tight: the pass preempts
    assert calls["taken"] > 3_000 and calls["mid_pass"] >= 20 and calls["mid_pass_taken"] > 20
    assert calls["none_free"] >= 15  # (with no free block: those before the first that needs one)


def test_fastswitch_walk_takes_runs_of_decodes_in_bulk():
    """FastSwitch's walk in priority order takes each run of running decodes in one call (not
    only the leading one): the same run as allocating each one by one, with swaps and
    evictions, and the calls past the walk's start did take decodes."""
    fast, fast_reqs, calls = _run("fastswitch", bulk=True)
    slow, slow_reqs, _ = _run("fastswitch", bulk=False)
    assert_same_run(fast, slow, fast_reqs, slow_reqs, num_blocks=NUM_BLOCKS)
    assert sum(r.num_preemptions for r in fast_reqs) > 10  # KV is tight: the walk evicts
    assert calls["taken"] > 3_000 and calls["mid_pass"] >= 20 and calls["mid_pass_taken"] >= 60
    assert calls["none_free"] >= 15  # (with no free block: those before the first that needs one)


def _fastswitch_run(bulk: bool):
    """Two tenants over a tight GPU cache with a large CPU one: FastSwitch swaps requests out
    for fairness and back in with the copies overlapped (`swap_ready_s` holds those in
    flight). Counts the decodes taken in bulk while a copy may be in flight."""
    engine, sched, kv, loop, _ = make_engine(num_blocks=NUM_BLOCKS, scheduler="fastswitch", max_num_seqs=32,
                                             max_num_batched_tokens=256, fast_forward=False, num_cpu_blocks=400,
                                             params={"priority_update_interval": 3})
    taken = {"in_flight": 0}
    lead = kv.allocate_leading_decodes

    def counted_lead(reqs):
        if not bulk:
            return 0  # the reference: the walk allocates each request, asking `is_swap_ready`
        k = lead(reqs)
        if sched.swap_ready_s:
            taken["in_flight"] += k
        return k

    kv.allocate_leading_decodes = counted_lead
    rng = random.Random(5)
    reqs = [make_request(i, rng.randint(20, 300), rng.randint(5, 120), arrival=0.002 * i, tenant="ab"[i % 2])
            for i in range(100)]
    serve(engine, loop, reqs)
    engine.drain(loop.now_s)
    kv.check_all_free()
    return engine, reqs, taken, sched


def test_fastswitch_takes_decodes_in_bulk_while_swap_ins_are_in_flight():
    """The walk's decodes are taken in bulk up to the first request whose swap-in may be in
    flight (the walk asks it `is_swap_ready`; the others it lets run without changing
    anything): the same run as the walk one by one."""
    fast, fast_reqs, taken, sched = _fastswitch_run(bulk=True)
    slow, slow_reqs, _, _ = _fastswitch_run(bulk=False)
    assert_same_run(fast, slow, fast_reqs, slow_reqs, num_blocks=NUM_BLOCKS)
    assert fast.num_swap_copies > 20 and sched.swap_mechanics.overlap  # swaps, overlapped
    assert taken["in_flight"] > 300  # decodes taken in bulk beside copies in flight
