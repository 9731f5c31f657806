"""TensorRT-LLM's in-flight batching driven step by step: no-evict reservations, max utilization
pauses, whole contexts with chunked context off, FCFS chunks with it on, and fast forward exact."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.workload.request import RequestState
from tests.factories import assert_same_run, make_engine, make_request, run_engine
from tests.replica.test_vllm_scheduler import run_logged


def test_context_waits_whole_where_vllm_chunks_it():
    # Budget 64: A decodes (1 token), B's 64-token prompt does not fit the 63 left.
    def steps_of(scheduler):
        engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler=scheduler, max_num_batched_tokens=64,
                                                    fast_forward=False)
        return run_logged(engine, loop, [make_request(0, 10, 3), make_request(1, 64, 2, arrival=0.005)])

    trt, vllm = steps_of("trtllm"), steps_of("vllm")
    assert vllm[1] == [(0, 1), (1, 63)]  # vLLM chunks B at once
    assert trt[0] == [(0, 10)]
    assert trt[1] == [(0, 1)] and trt[2] == [(0, 1)]  # B waits whole while A decodes
    assert trt[3] == [(1, 64)]  # and runs its whole context once A is done
    assert trt[4] == [(1, 1)] and len(trt) == 5


def test_no_evict_refuses_what_max_utilization_takes_then_pauses():
    # 10 blocks of 16 tokens; each request reserves 16 + 64 tokens = 5 blocks.
    reqs = lambda: [make_request(i, 16, 64) for i in range(3)]  # noqa: E731
    engine, sched, kv, loop, done = make_engine(num_blocks=10, scheduler="trtllm", fast_forward=False)
    no_evict = run_logged(engine, loop, reqs())
    assert no_evict[0] == [(0, 16), (1, 16)]  # the third reservation does not fit: it waits
    first_c = next(i for i, s in enumerate(no_evict) if (2, 16) in s)
    assert first_c == 64  # admitted only when a request finishes (its 64th token at step 64)
    assert len(done) == 3 and sum(r.num_preemptions for r in done) == 0

    engine, sched, kv, loop, done = make_engine(num_blocks=10, scheduler="trtllm", fast_forward=False,
                                                params={"capacity_scheduler_policy": "MAX_UTILIZATION"})
    steps = run_logged(engine, loop, reqs())
    assert steps[0] == [(0, 16), (1, 16), (2, 16)]  # next-step blocks only: all three start
    assert len(done) == 3 and all(r.state == RequestState.FINISHED for r in done)
    paused = [r.id for r in done if r.num_preemptions]
    assert paused == [2]  # the last started request is paused when the cache runs out


def test_chunked_context_sizes_chunks_first_come_first_served_in_blocks():
    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="trtllm", max_num_batched_tokens=64,
                                                fast_forward=False, params={"enable_chunked_context": True})
    steps = run_logged(engine, loop, [make_request(0, 10, 3), make_request(1, 100, 2, arrival=0.005)])
    assert steps[1] == [(0, 1), (1, 48)]  # 63 tokens left, cut to a multiple of the 16-token block
    assert steps[2] == [(0, 1), (1, 52)]  # the rest of its context is not cut
    assert steps[3] == [(1, 1)]


def test_batch_size_and_generation_first():
    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="trtllm", max_num_batched_tokens=64,
                                                max_num_seqs=2, fast_forward=False)
    steps = run_logged(engine, loop, [make_request(i, 8, 2, arrival=0.001 * i) for i in range(3)])
    assert steps[0] == [(0, 8)]
    assert steps[1] == [(0, 1), (1, 8)]  # generation first, then the context; max_batch_size 2
    assert steps[2] == [(1, 1), (2, 8)]


def test_batch_waiting_holds_contexts_while_generation_runs():
    # PyExecutor._waiting_requests: with requests generating, a new context waits up to
    # batch_wait_timeout_iters iterations unless the step's tokens reach ratio x max_num_tokens.
    def steps_of(params):
        engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="trtllm", max_num_batched_tokens=64,
                                                    fast_forward=False, params=params)
        return run_logged(engine, loop, [make_request(0, 10, 8), make_request(1, 8, 2, arrival=0.005)])

    off = steps_of({})
    assert off[0] == [(0, 10)] and off[1] == [(0, 1), (1, 8)]  # no waiting: B's context runs at once
    held = steps_of({"batch_wait_timeout_iters": 3, "batch_wait_max_tokens_ratio": 0.9})
    assert held[0] == [(0, 10)]  # nothing is generating: the first context is never held
    assert held[1] == held[2] == held[3] == [(0, 1)]  # B held 3 iterations (8 + 1 tokens < 0.9 x 64)
    assert held[4] == [(0, 1), (1, 8)]  # the timeout lets it in
    early = steps_of({"batch_wait_timeout_iters": 3, "batch_wait_max_tokens_ratio": 0.1})
    assert early[1] == [(0, 1), (1, 8)]  # 8 + 1 tokens >= 0.1 x 64: no wait
    none = steps_of({"batch_wait_timeout_iters": 3})
    assert none[1] == [(0, 1), (1, 8)]  # ratio 0: any token count reaches it, as in TensorRT-LLM


def test_admission_errors_name_the_limit():
    engine, sched, *_ = make_engine(num_blocks=10, scheduler="trtllm", max_num_batched_tokens=64)
    assert sched.admission_error(make_request(0, 16, 144)) is None  # 160 tokens: exactly the 10 blocks
    assert sched.admission_error(make_request(0, 16, 160)) == "prompt + max new tokens need 11 KV blocks; the cache has 10"
    assert "a prompt of 65 tokens exceeds max_num_tokens 64" in sched.admission_error(make_request(1, 65, 1))
    engine, sched, *_ = make_engine(num_blocks=10, scheduler="trtllm", max_num_batched_tokens=64,
                                    params={"enable_chunked_context": True})
    assert sched.admission_error(make_request(1, 65, 1)) is None


def requests(seed: int, n: int = 250):
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(0.03, n))
    reqs = []
    for i in range(n):
        kw = {}
        if rng.random() < 0.3:  # shared prefixes from a small pool
            kw = dict(hash_ids=tuple(range(int(rng.integers(0, 3)) * 10, int(rng.integers(0, 3)) * 10 + 5)),
                      hash_block_tokens=32)
        reqs.append(make_request(i, int(rng.integers(1, 200)), int(rng.integers(1, 200)), float(t[i]), **kw))
    return reqs


@pytest.mark.parametrize("params", [{}, {"enable_chunked_context": True},
                                    {"capacity_scheduler_policy": "MAX_UTILIZATION"},
                                    {"batch_wait_timeout_iters": 5, "batch_wait_max_tokens_ratio": 0.5},
                                    {"capacity_scheduler_policy": "MAX_UTILIZATION", "enable_chunked_context": True}])
@pytest.mark.parametrize("seed,num_blocks", [(1, 60), (2, 150), (3, 1000)])
def test_fast_forward_matches_step_by_step(params, seed, num_blocks):
    a_reqs, b_reqs = requests(seed), requests(seed)
    a = run_engine(a_reqs, True, num_blocks, "trtllm", params, max_num_seqs=12)
    b = run_engine(b_reqs, False, num_blocks, "trtllm", params, max_num_seqs=12)
    assert a.num_fast_forwarded_steps > 0.3 * a.num_steps
    assert_same_run(a, b, a_reqs, b_reqs, num_blocks)
    assert all(r.state == RequestState.FINISHED for r in a_reqs)
    if "capacity_scheduler_policy" not in params:
        assert sum(r.num_preemptions for r in b_reqs) == 0  # no-evict never preempts


@pytest.mark.parametrize("params", [{}, {"enable_chunked_context": True}, {"capacity_scheduler_policy": "MAX_UTILIZATION"}])
@pytest.mark.parametrize("num_blocks", [60, 400])  # blocked by KV / by max_batch_size
def test_arrivals_behind_a_blocked_head_keep_the_stretch(params, num_blocks, monkeypatch):
    from servesim.replica.stretch import Stretch

    kept = []
    add = Stretch.add_waiting
    monkeypatch.setattr(Stretch, "add_waiting", lambda st, t: (kept.append(t), add(st, t)))
    fast, slow = requests(4, n=300), requests(4, n=300)
    for reqs in (fast, slow):
        for r in reqs:
            r.arrival_s /= 3  # overload: the queue's head is blocked most of the time
    a = run_engine(fast, True, num_blocks, "trtllm", params, max_num_seqs=12)
    b = run_engine(slow, False, num_blocks, "trtllm", params, max_num_seqs=12)
    assert len(kept) > 20
    assert_same_run(a, b, fast, slow, num_blocks)


def test_no_evict_reservations_read_from_totals_equal_the_full_pass():
    # Every no-evict pass's reservation, summed from the totals kept by request, equals the full
    # pass over the started requests (`total_blocks` less the blocks held, per request); a
    # request admitted without `add_request` is filled in on the way; every finished request
    # leaves `_totals`.
    from servesim.replica.schedulers.trtllm import TRTLLMScheduler
    from tests.factories import serve

    engine, sched, kv, loop, done = make_engine(num_blocks=300, scheduler="trtllm", max_num_batched_tokens=256,
                                                max_num_seqs=24)
    rng = np.random.default_rng(7)
    reqs = [make_request(i, int(rng.integers(10, 250)), int(rng.integers(1, 200)), 0.01 * i,
                         max_tokens=None if i % 3 else 250) for i in range(150)]
    checked = []

    def reserved(self, started):
        value = TRTLLMScheduler._reserved(self, started)
        assert value == sum(self.total_blocks(r) - h for r, h in zip(started, self.kv.num_blocks_list(started)))
        checked.append(len(started))
        return value

    sched._reserved = reserved.__get__(sched)
    serve(engine, loop, reqs)
    assert all(r.state == RequestState.FINISHED for r in reqs)
    assert len(checked) > 50 and max(checked) > 10
    assert sched._totals == {}
    stray = make_request(999, 40, 30, max_tokens=100)  # never passed through `add_request`
    assert kv.allocate_slots(stray, 40)
    assert sched._reserved([stray]) == sched.total_blocks(stray) - 3 == 9 - 3
    assert sched._totals == {stray: 9}


@pytest.mark.parametrize("params,num_blocks,budget", [({}, 300, 512), ({}, 60, 512),
                                                     ({"enable_chunked_context": True}, 300, 64)])
def test_no_evict_started_requests_without_the_pass_are_the_pass(params, num_blocks, budget):
    # With chunked context off every started request generates when the no-evict pass runs,
    # so the pass takes the running list as it is; it equals the is_decoding split (random
    # prompts with prefix keys, a tight cache); with chunked context on it reads each request.
    from servesim.replica.schedulers.batch_passes import decoding_requests
    from tests.factories import serve
    from tests.replica.test_fast_forward import random_requests

    engine, sched, kv, loop, done = make_engine(num_blocks=num_blocks, scheduler="trtllm", params=params,
                                                max_num_batched_tokens=budget, max_num_seqs=16)
    seen = []
    orig = sched._reserved

    def reserved(started):
        gens = decoding_requests(sched.running)
        assert started == gens + [r for r in sched.running if not r.is_decoding]
        seen.append(sched._partial)
        return orig(started)

    sched._reserved = reserved
    reqs = random_requests(num_blocks, 150)
    serve(engine, loop, reqs)
    assert all(r.state == RequestState.FINISHED for r in reqs)
    assert len(seen) > 20 and all(p == bool(params) for p in seen)


def test_generation_requests_take_their_drafts_of_the_token_budget():
    # microBatchScheduler: a generation request counts 1 + its draft tokens against max_num_tokens.
    # Budget 64: A generates; B's 61-token context fits beside A's 1 token, not beside A's 1 + 3 drafts.
    def steps_of(drafts):
        engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="trtllm", max_num_batched_tokens=64,
                                                    fast_forward=False, num_speculative_tokens=drafts,
                                                    spec_acceptance_rate=0.0, rng=np.random.default_rng(0))
        steps = run_logged(engine, loop, [make_request(0, 10, 6), make_request(1, 61, 2, arrival=0.005)])
        assert len(done) == 2
        return steps

    plain, mtp = steps_of(0), steps_of(3)
    assert plain[1] == [(0, 1), (1, 61)]
    assert mtp[0] == [(0, 10)]
    assert mtp[1] == mtp[2] == mtp[3] == [(0, 1)]  # 4 + 61 > 64: B waits whole while A speculates
    b_start = next(i for i, s in enumerate(mtp) if (1, 61) in s)
    assert b_start == 6 and all(s == [(0, 1)] for s in mtp[1:b_start])  # until A has finished (each step counts
    # the request's drafts, as TensorRT-LLM's scheduler does with the ones it proposed last)


def test_context_admission_lag_holds_a_taken_context_one_iteration_while_others_decode():
    # context_admission_lag_iterations 1: B's slot is granted at the iteration after its arrival, its
    # context runs one iteration later while A decodes; A, alone on an idle engine, runs at once.
    def steps_of(params, reqs):
        engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="trtllm", max_num_batched_tokens=64,
                                                    fast_forward=False, params=params)
        return run_logged(engine, loop, reqs), sched

    two = lambda: [make_request(0, 10, 6), make_request(1, 8, 2, arrival=0.005)]  # noqa: E731
    off, _ = steps_of({}, two())
    assert off[0] == [(0, 10)] and off[1] == [(0, 1), (1, 8)]  # lag 0: B's context in the iteration that takes it
    lag, sched = steps_of({"context_admission_lag_iterations": 1}, two())
    assert lag[0] == [(0, 10)]  # idle engine: A's context at once
    assert lag[1] == [(0, 1)]  # B taken (slot and reservation), held while A decodes
    assert lag[2] == [(0, 1), (1, 8)]  # and run exactly one iteration later
    assert sched._taken_at == {}  # every count dropped once its context started
    two_lag, _ = steps_of({"context_admission_lag_iterations": 2}, two())
    assert two_lag[1] == two_lag[2] == [(0, 1)] and two_lag[3] == [(0, 1), (1, 8)]
    # two prompts on an idle engine: both run at once, as with lag 0
    both, _ = steps_of({"context_admission_lag_iterations": 1}, [make_request(0, 10, 3), make_request(1, 8, 3)])
    assert both[0] == [(0, 10), (1, 8)]


def test_context_admission_lag_rejects_a_negative_count():
    from pydantic import ValidationError

    from servesim.replica.schedulers import get_scheduler

    cls = get_scheduler("trtllm")
    assert cls.Params().context_admission_lag_iterations == 0  # TensorRT-LLM's loop as read
    with pytest.raises(ValidationError, match="context_admission_lag_iterations") as err:
        cls.Params(context_admission_lag_iterations=-1)
    assert "greater than or equal to 0" in str(err.value)


@pytest.mark.parametrize("params", [{}, {"context_admission_lag_iterations": 1},
                                    {"context_admission_lag_iterations": 2, "capacity_scheduler_policy": "MAX_UTILIZATION"},
                                    {"context_admission_lag_iterations": 1, "enable_chunked_context": True}])
@pytest.mark.parametrize("seed,num_blocks", [(5, 60), (6, 1000)])
def test_context_admission_lag_fast_forward_matches_step_by_step(params, seed, num_blocks):
    a_reqs, b_reqs = requests(seed), requests(seed)
    a = run_engine(a_reqs, True, num_blocks, "trtllm", params, max_num_seqs=12)
    b = run_engine(b_reqs, False, num_blocks, "trtllm", params, max_num_seqs=12)
    assert a.num_fast_forwarded_steps > 0  # stretches still run with the lag (nothing waiting, blocked heads)
    if not params:
        assert a.num_fast_forwarded_steps > 0.3 * a.num_steps
    assert_same_run(a, b, a_reqs, b_reqs, num_blocks)
    assert all(r.state == RequestState.FINISHED for r in a_reqs)
