"""Speculative decoding as an engine option: accepted + 1 tokens per step, rollback, cost, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.replica.spec_decode import speculate
from servesim.workload.request import RequestState
from tests.factories import make_engine, make_request, serve
from tests.replica.test_fast_forward import random_requests
from tests.replica.test_vllm_v0_scheduler import run_traced


def test_full_acceptance_emits_k_plus_one_tokens_per_step():
    engine, sched, kv, loop, done = make_engine(num_speculative_tokens=3, spec_acceptance_rate=1.0,
                                                fast_forward=False)  # (one `schedule` call per step traced)
    r = make_request(0, 32, 9)
    trace = run_traced(engine, loop, [r])
    assert [t[1] for t in trace if t[1]] == [[(0, 32)], [(0, 1)], [(0, 1)]]
    # step 0: the prompt's token; steps 1 and 2: 3 drafts accepted + the target's token each
    assert r.state == RequestState.FINISHED and r.num_output_tokens == 9
    times = engine.recorder.step_log(100).end_s
    emitted = np.concatenate([np.arange(a, b + 1) for a, b in zip(r.token_steps[::2], r.token_steps[1::2])])
    assert np.bincount(emitted).tolist() == [1, 4, 4]
    assert engine.recorder.step_log(100).output_tokens.tolist() == [1, 4, 4]
    # step 1 verifies 1 + 3 tokens over a 32-token context and drafts 3 tokens at 5% of a decode
    verify = 0.01 + 4e-4 + 32e-6
    draft = 0.05 * 3 * (0.01 + 1e-4 + 32e-6)
    assert times[1] - times[0] == pytest.approx(verify + draft)
    assert r.num_computed_tokens == 32 + 8  # the last token's KV is never computed


def test_drafts_stop_at_the_last_token_to_emit():
    engine, sched, kv, loop, done = make_engine(num_speculative_tokens=5, spec_acceptance_rate=1.0)
    r = make_request(0, 16, 4)
    run_traced(engine, loop, [r])
    assert r.num_output_tokens == 4 and r.token_steps == [0, 1, 1, 1, 1, 1]  # 1, then 3 (2 drafts + 1)


def test_zero_acceptance_is_plain_decoding_but_slower():
    plain_engine, *_ , plain_loop, _ = make_engine()
    spec_engine, *_ , spec_loop, _ = make_engine(num_speculative_tokens=3, spec_acceptance_rate=0.0)
    a, b = make_request(0, 32, 20), make_request(0, 32, 20)
    run_traced(plain_engine, plain_loop, [a])
    run_traced(spec_engine, spec_loop, [b])
    assert a.token_steps == b.token_steps == [0, 19]  # one token per step: every draft rolled back
    assert b.finish_s > a.finish_s  # verifying 4 tokens and drafting cost more than a decode


def test_lookahead_needs_free_blocks_else_plain_decode():
    engine, sched, kv, loop, done = make_engine(num_blocks=2, num_speculative_tokens=3, spec_acceptance_rate=1.0)
    r = make_request(0, 30, 10)
    assert kv.allocate_slots(r, 30)
    r.num_computed_tokens, r.num_output_tokens = 30, 1  # decoding its 31st token: 2 blocks suffice
    dt, plain, items = speculate(engine, [r], [30], [], [])
    assert plain == [r] and items == []  # 30 + 1 + 3 lookahead tokens would need a 3rd block
    assert dt == engine.perf.step_time_s([], [30])
    assert kv.num_blocks_of(0) == 2


def run_random(seed_rng: int, scheduler: str = "vllm", k: int = 4):
    reqs = random_requests(5, n=120)
    engine, sched, kv, loop, done = make_engine(num_blocks=120, scheduler=scheduler, max_num_batched_tokens=256,
                                                max_num_seqs=16, num_speculative_tokens=k, spec_acceptance_rate=0.7,
                                                rng=np.random.default_rng(seed_rng))
    serve(engine, loop, reqs)
    engine.drain(loop.now_s)
    kv.check_all_free()
    assert all(r.state == RequestState.FINISHED and r.num_output_tokens == r.output_len for r in reqs)
    steps = engine.recorder.step_log(120)
    assert int(steps.output_tokens.sum()) == sum(r.output_len for r in reqs)
    return reqs, engine


@pytest.mark.parametrize("scheduler", ["vllm", "vllm-v0", "fastswitch", "andes", "continuum"])
def test_any_scheduler_with_speculation_is_deterministic_per_seed(scheduler):
    a, ea = run_random(1, scheduler)
    b, eb = run_random(1, scheduler)
    c, ec = run_random(2, scheduler)
    assert [r.token_steps for r in a] == [r.token_steps for r in b]
    assert [r.token_steps for r in a] != [r.token_steps for r in c]
    # fast forward is on while speculating: every policy here knows its repeated steps' order
    # (`Scheduler.repeat_order`; fastswitch's until its next priority refresh)
    assert ea.num_fast_forwarded_steps > 0


def test_fewer_steps_with_speculation():
    reqs, spec = run_random(3)
    _, plain = run_random(3, k=0)
    # a decode emits (1 - 0.7^5) / 0.3 = 2.77 tokens per step on average; prefill steps and
    # requests near their end emit fewer
    assert plain.num_steps / spec.num_steps > 1.8


def test_acceptance_draws_in_blocks_equal_one_draw_per_step():
    import numpy as np

    from servesim.replica.spec_decode import DRAW_BLOCK_ROWS, AcceptanceDraws

    sizes = [3, 1, 7, DRAW_BLOCK_ROWS - 5, 9, 2 * DRAW_BLOCK_ROWS, 4]  # crosses block ends, and one larger
    draws = AcceptanceDraws(np.random.default_rng(5), 4, 0.6)
    ref = np.random.default_rng(5)
    for n in sizes:
        want = (ref.random((n, 4)) < 0.6).cumprod(axis=1).sum(axis=1).tolist()
        assert draws.take(n) == want
