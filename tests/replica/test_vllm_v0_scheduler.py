"""vLLM v0 (prefill-first) driven step by step through the engine, with exact expectations."""

from __future__ import annotations

import pytest

from servesim.workload.request import RequestState
from tests.factories import make_engine, make_request, serve


def run_traced(engine, loop, requests):
    """Run; return per schedule call (start time, [(id, tokens)], preempted, swapped out, swapped in)."""
    trace = []
    schedule = engine.scheduler.schedule

    def traced(now_s):
        out = schedule(now_s)
        trace.append((now_s, [(r.id, n) for r, n in out.scheduled], [r.id for r in out.preempted],
                      [r.id for r in out.swapped_out], [r.id for r in out.swapped_in]))
        return out

    engine.scheduler.schedule = traced
    serve(engine, loop, requests)
    engine.drain(loop.now_s)
    return trace


def steps_of(trace):
    return [s for _, s, *_ in trace if s]


def test_reference_defaults():
    engine, sched, *_ = make_engine(scheduler="vllm-v0", max_model_len=1024)
    assert sched.max_num_seqs == 256 and sched.token_budget == 2048  # max(max_model_len, 2048)
    assert sched.params.watermark == 0.01 and sched.params.preemption_mode == "recompute"
    engine, sched, *_ = make_engine(scheduler="vllm-v0", max_model_len=8192)
    assert sched.token_budget == 8192


def test_whole_prompts_first_then_decodes_never_mixed():
    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="vllm-v0", fast_forward=False)
    a, b = make_request(0, 100, 3), make_request(1, 30, 2)
    late = make_request(2, 32, 2, arrival=0.03)  # arrives while step 1 (A and B decoding) runs
    steps = steps_of(run_traced(engine, loop, [a, b, late]))
    assert steps[0] == [(0, 100), (1, 30)]  # whole prompts in one step (no chunking)
    assert steps[1] == [(0, 1), (1, 1)]
    assert steps[2] == [(2, 32)]  # prefill-first: A stalls for the new prompt (B finished)
    assert steps[3] == [(0, 1), (2, 1)]
    assert len(steps) == 4
    assert all(r.state == RequestState.FINISHED for r in (a, b, late)) and kv.num_free_blocks == 100


def test_watermark_blocks_admission_head_of_line():
    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="vllm-v0", fast_forward=False)
    assert sched.watermark_blocks == 1
    a = make_request(0, 1568, 2)  # 98 blocks: 100 - 98 = 2 free >= 1
    b = make_request(1, 17, 1)  # 2 blocks: 2 - 2 = 0 < watermark 1 -> LATER
    steps = steps_of(run_traced(engine, loop, [a, b]))
    assert steps == [[(0, 1568)], [(0, 1)], [(1, 17)]]


def test_request_above_watermark_capacity_is_rejected():
    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="vllm-v0")
    r = make_request(0, 1584, 1)  # 1585 tokens = 100 blocks > 100 - 1
    engine.add_request(r, 0.0)
    assert r.state == RequestState.REJECTED and "watermark" in r.extra["reject_reason"]


def test_recompute_preemption_latest_arrival_requeued_at_front():
    engine, sched, kv, loop, done = make_engine(num_blocks=10, scheduler="vllm-v0", fast_forward=False)
    a, b = make_request(0, 64, 50), make_request(1, 48, 50)
    c = make_request(2, 16, 2, arrival=0.05)
    trace = run_traced(engine, loop, [a, b, c])
    # step 4 runs C's prompt alone; in step 5, C (latest arrival) cannot get its 2nd block and
    # nothing arrived after it: it preempts itself and goes back to the front of the queue.
    # Its re-prefill (16 prompt + 1 generated tokens = 2 blocks) waits for 2 free blocks.
    assert trace[4][1] == [(2, 16)]
    assert trace[5][1:3] == ([(0, 1), (1, 1)], [2])
    assert all(t[1] == [(0, 1), (1, 1)] for t in trace[6:18])
    # step 18: B (now the latest running arrival) cannot grow: preempted, put in FRONT of C
    assert trace[18][1:3] == ([(0, 1)], [1])
    refill = next(i for i, t in enumerate(trace) if (2, 17) in t[1])
    # B first, prompt + generated tokens past its 2 full blocks that A's growth (blocks 7 and 8)
    # did not evict; C's one full block was evicted
    assert trace[refill][1] == [(1, 48 + 17 - 32), (2, 17)]
    assert b.num_cached_tokens_total == 32 and c.num_cached_tokens_total == 0
    assert trace[refill - 1][1] == [(0, 1)]  # ... once A, the only one left, finished
    assert a.state == RequestState.FINISHED and a.finish_s <= trace[refill][0]
    assert (a.num_preemptions, b.num_preemptions, c.num_preemptions) == (0, 1, 1)
    assert all(r.state == RequestState.FINISHED for r in (a, b, c)) and kv.num_free_blocks == 10


def test_swap_mode_swapped_first_fifo_and_only_without_preemption():
    engine, sched, kv, loop, done = make_engine(num_blocks=10, scheduler="vllm-v0", fast_forward=False,
                                                params={"preemption_mode": "swap"})
    a, b = make_request(0, 64, 50), make_request(1, 48, 50)
    c = make_request(2, 16, 2, arrival=0.05)
    late = make_request(3, 16, 1, arrival=0.1)
    trace = run_traced(engine, loop, [a, b, c, late])
    assert trace[4][1] == [(2, 16)]
    assert trace[5][1:] == ([(0, 1), (1, 1)], [], [2], [])  # C swapped out (not recomputed)
    # C needs its block + 1 for the next token = 2 > 1 free: it stays out; meanwhile the new
    # request D waits too, because swapped requests come first (no prefill step at all).
    assert all(t[1] == [(0, 1), (1, 1)] and not t[4] for t in trace[6:18])
    assert trace[18][1:] == ([(0, 1)], [], [1], [])  # B needs a 5th block: swapped out
    assert trace[19][1:] == ([(0, 1), (2, 1)], [], [], [2])  # C first (FIFO), B does not fit
    assert late.first_scheduled_s > b.first_token_s
    assert all(r.state == RequestState.FINISHED for r in (a, b, c, late))
    assert c.num_output_tokens == 2 and kv.num_free_blocks == 10 and kv.num_free_cpu_blocks == 10


def test_sync_swap_lengthens_the_step_by_the_copy_time():
    engine, sched, kv, loop, done = make_engine(num_blocks=10, scheduler="vllm-v0", fast_forward=False,
                                                params={"preemption_mode": "swap"})
    a, b = make_request(0, 64, 50), make_request(1, 48, 50)
    c = make_request(2, 16, 2, arrival=0.05)
    trace = run_traced(engine, loop, [a, b, c])
    # ToyPerf: 4 layers; vLLM v0 copies each block per layer for K and V: 8 copies of 5 us,
    # plus 16 tokens x 1 us of PCIe time per block.
    per_block = 8 * 5e-6 + 16e-6
    a_ctx, b_ctx = 64 + 3, 48 + 3  # contexts in step 5: prompts + 3 decode steps
    toy = 0.01 + 2e-4 + 1e-6 * (a_ctx + b_ctx)
    assert trace[6][0] - trace[5][0] == pytest.approx(toy + per_block, abs=1e-12)
    assert engine.swap_stall_s == pytest.approx(per_block * 10)  # C out+in (1+1), B out+in (4+4)
    assert engine.num_swapped_blocks == 10 and engine.num_swap_copies == 80


@pytest.mark.parametrize("mode", ["recompute", "swap"])
def test_running_pass_order_kept_between_steps_is_the_sorted_batch(mode):
    """The running pass walks the batch by (arrival, id): kept between steps, only the requests
    admitted, swapped in or transferred since placed; before every pass it equals a fresh sort,
    and most passes placed few requests or none (tight KV: preemptions re-queue earlier arrivals)."""
    import numpy as np

    from servesim.replica.schedulers.queues import ARRIVAL_ID as _ARRIVAL_ID

    engine, sched, kv, loop, done = make_engine(num_blocks=60, scheduler="vllm-v0", num_cpu_blocks=40,
                                                params={"preemption_mode": mode, "max_num_seqs": 24},
                                                max_num_batched_tokens=512, max_num_seqs=24)
    order, seen = sched._arrival_order, {"placed": 0, "sorted": 0}

    def checked():
        n = sched._appended
        got = order()
        assert got == sorted(sched.running, key=_ARRIVAL_ID)
        seen["placed" if n * 8 <= len(sched.running) else "sorted"] += 1
        return got

    sched._arrival_order = checked
    rng = np.random.default_rng(5)
    # arrivals out of id order too (keys are (arrival, id), not ids)
    reqs = [make_request(i, int(rng.integers(10, 120)), int(rng.integers(5, 90)), arrival=float(rng.uniform(0, 0.05)))
            for i in range(150)]
    serve(engine, loop, sorted(reqs, key=lambda r: r.arrival_s))
    assert all(r.state == RequestState.FINISHED for r in reqs)
    assert seen["placed"] > 50 and seen["sorted"] > 0
    assert sum(r.num_preemptions for r in reqs) > 0
    kv.check_all_free()
