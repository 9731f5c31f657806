"""With speculative decoding a step emits 1 + its accepted drafts: SGLang still decays its
`new_token_ratio` once per decode batch (its `update_running_batch`), VTC's `max_wait_tokens`
counts decode steps, and VTC's counters charge every token each request emitted."""

from __future__ import annotations

import numpy as np
import pytest

from tests.factories import make_engine, make_request, serve


def spec_engine(scheduler: str, fast_forward: bool):
    return make_engine(num_blocks=400, scheduler=scheduler, max_num_batched_tokens=256, max_num_seqs=16,
                       num_speculative_tokens=3, spec_acceptance_rate=0.7, rng=np.random.default_rng(3),
                       fast_forward=fast_forward, defer_finishes=fast_forward)


@pytest.mark.parametrize("fast_forward", [False, True])
def test_sglang_decays_the_ratio_once_per_decode_step_not_per_token(fast_forward):
    engine, sched, kv, loop, _ = spec_engine("sglang", fast_forward)
    req = make_request(0, 16, 120)
    serve(engine, loop, [req])
    decode_steps = engine.num_steps - 1  # after the one prefill step
    assert decode_steps < req.output_len - 1 - 20  # drafts were accepted: fewer steps than tokens
    decay = (sched.init_ratio - sched.min_ratio) / sched.params.new_token_ratio_decay_steps
    assert sched.new_token_ratio == pytest.approx(sched.init_ratio - decay * decode_steps, rel=1e-12)


@pytest.mark.parametrize("fast_forward", [False, True])
def test_vtc_charges_each_request_its_own_tokens_and_counts_steps(fast_forward):
    engine, sched, kv, loop, _ = spec_engine("vtc", fast_forward)
    reqs = [make_request(0, 16, 40, tenant="a"), make_request(1, 24, 90, tenant="b")]
    serve(engine, loop, reqs)
    p = sched.params
    for r in reqs:  # the prompt, then every output token but the prefill's first
        assert sched.counters[r.tenant] == pytest.approx(p.input_price * r.prompt_len
                                                         + p.output_price * (r.output_len - 1), rel=1e-12)
    assert sched._decode_steps == engine.num_steps - 1  # one prefill mini-batch, then decode steps
    assert engine.num_steps - 1 < 90 - 1 - 20
