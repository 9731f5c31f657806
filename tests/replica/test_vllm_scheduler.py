"""The vLLM v1 scheduler driven step by step through the engine, with exact expectations."""

from __future__ import annotations

from servesim.workload.request import RequestState
from tests.factories import make_engine, make_request, serve


def run_logged(engine, loop, requests):
    """Add requests at their arrival times, run, and return [[(id, tokens), ...] per step]."""
    steps = []
    schedule = engine.scheduler.schedule

    def logged(now_s):
        out = schedule(now_s)
        if out.scheduled:
            steps.append([(r.id, n) for r, n in out.scheduled])
        return out

    engine.scheduler.schedule = logged
    serve(engine, loop, requests)
    return steps


def test_token_budget_and_chunked_prefill():
    engine, sched, kv, loop, done = make_engine(num_blocks=100, max_num_batched_tokens=64, fast_forward=False)
    a, b = make_request(0, 100, 3), make_request(1, 30, 2)
    steps = run_logged(engine, loop, [a, b])
    assert steps[0] == [(0, 64)]  # A's prompt is chunked at the budget; B cannot start
    assert steps[1] == [(0, 36), (1, 28)]  # running first, then B gets the remaining 28
    assert steps[2] == [(0, 1), (1, 2)]  # A decodes; B finishes its prompt (2 tokens)
    assert steps[3] == [(0, 1), (1, 1)]
    assert len(steps) == 4  # A: tokens at steps 2,3,4 (3 outputs); B: steps 3,4 (2 outputs)
    assert a.state == b.state == RequestState.FINISHED
    assert a.token_steps == [1, 3] and b.token_steps == [2, 3]
    assert kv.num_free_blocks == 100


def test_max_num_seqs_limits_admission():
    engine, sched, kv, loop, done = make_engine(max_num_seqs=2, fast_forward=False)
    reqs = [make_request(i, 8, 2) for i in range(3)]
    steps = run_logged(engine, loop, reqs)
    assert steps[0] == [(0, 8), (1, 8)]  # the third waits for a free sequence slot
    assert steps[1] == [(0, 1), (1, 1)]
    assert steps[2] == [(2, 8)]


def test_long_prefill_token_threshold_caps_each_request():
    engine, *_ , loop, done = make_engine(max_num_batched_tokens=64, long_prefill_token_threshold=20,
                                          fast_forward=False)
    steps = run_logged(engine, loop, [make_request(0, 50, 1), make_request(1, 10, 1)])
    assert steps[0] == [(0, 20), (1, 10)]
    assert steps[1] == [(0, 20)]
    assert steps[2] == [(0, 10)]


def test_preemption_victim_is_last_admitted_and_requeued_at_front():
    engine, sched, kv, loop, done = make_engine(num_blocks=10, max_num_batched_tokens=64, fast_forward=False)
    a, b = make_request(0, 64, 50), make_request(1, 48, 50)
    steps = run_logged(engine, loop, [a, b])
    # Step s (0-based) >= 1: A holds 64 + s tokens, B holds 48 + (s - 1) from step 2 on.
    # B needs its 5th block at 65 tokens (s = 18) while A holds 6 blocks (82 tokens): 11 > 10.
    assert steps[17] == [(0, 1), (1, 1)]
    assert steps[18] == [(0, 1)]
    # B generated 17 tokens (steps 1..17): 65 tokens, 64 computed in 4 full blocks, which stay
    # hittable in the free queue. Re-admitted, it would hit them and need a 5th block for its
    # last token: 5 > 4 free, so it waits (before, without hits, it re-prefilled 63 tokens in 4
    # blocks and was preempted again and again, 8 times). A's 7th and 8th blocks (steps 33
    # and 49) evict B's blocks 3 and 2; A finishes at step 49 and B comes back with 2 hit.
    assert steps[19:50] == [[(0, 1)]] * 31
    assert steps[50] == [(1, 65 - 32)]
    assert b.num_preemptions == 1 and a.num_preemptions == 0 and b.num_cached_tokens_total == 32
    assert a.state == b.state == RequestState.FINISHED and kv.num_free_blocks == 10


def test_priority_policy_preempts_lowest_priority():
    engine, sched, kv, loop, done = make_engine(num_blocks=10, max_num_batched_tokens=64, fast_forward=False,
                                                params={"policy": "priority"})
    low, high = make_request(0, 48, 50, priority=5), make_request(1, 64, 50, priority=0)
    steps = run_logged(engine, loop, [low, high])
    assert steps[0] == [(1, 64)]  # the heap serves priority 0 first even though it arrived second
    assert low.num_preemptions >= 1 and high.num_preemptions == 0


def test_prefix_cache_hit_after_shared_prefix():
    engine, sched, kv, loop, done = make_engine(num_blocks=100, fast_forward=False)
    first = make_request(0, 64, 2, hash_ids=(11, 12), hash_block_tokens=32)
    second = make_request(1, 96, 2, arrival=1.0, hash_ids=(11, 12, 13), hash_block_tokens=32)
    other = make_request(2, 64, 2, arrival=2.0, hash_ids=(99, 12), hash_block_tokens=32)
    steps = run_logged(engine, loop, [first, second, other])
    assert first.num_cached_tokens == 0
    assert second.num_cached_tokens == 64  # four 16-token blocks of the shared 64-token prefix
    assert other.num_cached_tokens == 0  # same second id but a different chain: no hit
    assert [n for rid, n in sum(steps, []) if rid == 1][0] == 32  # only the uncached 32 tokens run
    assert kv.num_hit_tokens == 64


def test_full_prompt_hit_still_recomputes_last_token():
    engine, sched, kv, loop, done = make_engine(num_blocks=100, fast_forward=False)
    a = make_request(0, 64, 1, hash_ids=(1, 2), hash_block_tokens=32)
    b = make_request(1, 64, 1, arrival=1.0, hash_ids=(1, 2), hash_block_tokens=32)
    run_logged(engine, loop, [a, b])
    assert b.num_cached_tokens == 48  # at most num_tokens - 1 tokens, in whole blocks


def test_request_too_long_is_rejected():
    engine, sched, kv, loop, done = make_engine(num_blocks=4, max_model_len=4096)
    r = make_request(0, 100, 10)  # 110 tokens > 4 blocks of 16
    engine.add_request(r, 0.0)
    assert r.state == RequestState.REJECTED and done == [r]


def test_an_idle_replicas_first_step_only_admits(monkeypatch):
    """With nothing running, `schedule` goes straight to admission (the running pass would do
    nothing): the steps are the ones the pass gives, which runs only once requests run."""
    from servesim.replica.schedulers.vllm_steps import VLLMSteps

    passes = []
    running_pass = VLLMSteps.schedule_running
    monkeypatch.setattr(VLLMSteps, "schedule_running", lambda self, out, *a: passes.append(len(self.running))
                        or running_pass(self, out, *a))
    engine, sched, kv, loop, done = make_engine(num_blocks=100, max_num_batched_tokens=64, fast_forward=False)
    a, b, c = make_request(0, 100, 3), make_request(1, 30, 2), make_request(2, 20, 1, arrival=60.0)
    steps = run_logged(engine, loop, [a, b, c])
    assert steps == [[(0, 64)], [(0, 36), (1, 28)], [(0, 1), (1, 2)], [(0, 1), (1, 1)], [(2, 20)]]
    # the running pass at steps 2, 3 and 4 (1 and c's step, on an idle replica, go straight to
    # admission)
    assert passes == [1, 2, 2]
