"""Speculative steps pay no prompt-only term for their verify chunks in the engine, stepped and
fast-forwarded alike (`PerfModel.step_time_s`'s `num_verify`; docs/fidelity-history.md, verify21)."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.perf import build_perf_model
from servesim.perf.config import PerfConfig
from tests.factories import make_engine, make_request, serve
from tests.replica.test_spec_fast_forward import assert_same_spec_run, spaced_requests

EAGER = dict(eager_layer_s=0.5e-3)  # 32 layers of llama-3.1-8b: 16 ms a step with prompt tokens


def _perf(**overrides):
    return build_perf_model("llama-3.1-8b", "h100-sxm", 1, "fp8", PerfConfig(engine="vllm", overrides=overrides))


def _run(reqs, fast_forward: bool, perf, num_blocks: int = 2000):
    engine, _, kv, loop, _ = make_engine(num_blocks=num_blocks, max_num_batched_tokens=256, max_num_seqs=16,
                                         num_speculative_tokens=3, spec_acceptance_rate=0.7,
                                         rng=np.random.default_rng(7), fast_forward=fast_forward, perf=perf)
    serve(engine, loop, reqs)
    engine.drain(loop.now_s)
    kv.check_all_free()
    return engine


def test_a_request_pays_the_eager_price_once_for_its_one_prompt_step_not_per_verify_pass():
    plain, eager = [make_request(0, 200, 300)], [make_request(0, 200, 300)]
    a = _run(plain, True, _perf())
    b = _run(eager, True, _perf(**EAGER))
    assert a.num_fast_forwarded_steps > 0 and b.num_fast_forwarded_steps > 0  # (the speculative stretches ran)
    assert b.num_steps == a.num_steps > 80  # (the same draws: 300 tokens in far fewer steps than 300)
    assert eager[0].finish_s - plain[0].finish_s == pytest.approx(32 * 0.5e-3, rel=1e-6)
    assert eager[0].first_token_s - plain[0].first_token_s == pytest.approx(32 * 0.5e-3, rel=1e-6)


@pytest.mark.parametrize("seed", [1, 2])
def test_fast_forward_matches_stepping_with_prompt_only_terms_on(seed):
    perf = _perf(act_quant_token_s=27e-9, mixed_prefill_slowdown=0.3, **EAGER)
    a_reqs, b_reqs = spaced_requests(seed), spaced_requests(seed)
    a = _run(a_reqs, True, perf)
    b = _run(b_reqs, False, perf)
    assert_same_spec_run(a, b, a_reqs, b_reqs, 2000)
    assert a.num_fast_forwarded_steps > 0.5 * a.num_steps
