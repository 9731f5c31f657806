"""A speculative verify pass (1 + k tokens of a decoding sequence) is priced as the decode it is:
none of the prompt-only terms (`eager_layer_s`, `act_quant_token_s`, `mixed_prefill_slowdown`,
the linear-attention layers' chunked prefill) that `step_time_s` charges prompt chunks, in the
scalar step, every fast form and attention DP alike (docs/fidelity-history.md, verify21)."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.perf import build_perf_model
from servesim.perf.config import PerfConfig

PROMPT_ONLY = dict(eager_layer_s=0.5e-3, act_quant_token_s=27e-9, mixed_prefill_slowdown=0.3)
EAGER_S = 32 * 0.5e-3  # llama-3.1-8b: 32 layers


def _pm(**overrides):
    return build_perf_model("llama-3.1-8b", "h100-sxm", 1, "fp8", PerfConfig(engine="trtllm", overrides=overrides))


def test_verify_chunks_pay_no_prompt_only_term():
    base, on = _pm(), _pm(**PROMPT_ONLY)
    verify = [(4, 700 + 37 * i) for i in range(16)]
    assert on.step_time_s(verify, [], 16) == base.step_time_s(verify, [], 16)
    assert on.step_time_s(verify, [900, 40], 16) == base.step_time_s(verify, [900, 40], 16)  # (beside plain decodes)
    ctx_sum = sum(c for _, c in verify)
    assert on.verify_step_times_s(16, 4, np.array([ctx_sum]))[0] == base.verify_step_times_s(16, 4, np.array([ctx_sum]))[0]
    assert on.verify_time_fn(16, 4)(ctx_sum) == base.verify_time_fn(16, 4)(ctx_sum)
    # Priced as prompt chunks (main's bug) they would pay the eager launches at least.
    assert on.step_time_s(verify, []) - base.step_time_s(verify, []) >= EAGER_S


def test_a_prompt_chunk_beside_verify_chunks_pays_its_own_terms_once():
    base, eager = _pm(), _pm(eager_layer_s=0.5e-3)
    verify = [(512, 3000)] + [(4, 800)] * 8
    assert eager.step_time_s(verify, [], 8) - base.step_time_s(verify, [], 8) == pytest.approx(EAGER_S, rel=1e-9)
    quant = _pm(act_quant_token_s=27e-9)
    diff = quant.step_time_s(verify, [], 8) - base.step_time_s(verify, [], 8)
    per_token = quant.terms.act_quant_s_per_token()
    assert diff == pytest.approx(per_token * 512, rel=1e-6)  # the prompt's 512 tokens, not the 32 verified
    # mixed: the prompt's tokens beside the 8 verifying decodes, its own per-token time only
    mixed = _pm(mixed_prefill_slowdown=0.3)
    assert mixed.step_time_s(verify, [], 8) - base.step_time_s(verify, [], 8) == pytest.approx(0.3 * base._token_s(512), rel=1e-6)


def test_forms_stay_bit_identical_to_the_step_with_the_terms_on():
    pm = _pm(**PROMPT_ONLY)
    rng = np.random.default_rng(3)
    for n, t, chunk in ((1, 4, 511), (13, 2, 499), (64, 4, 448)):
        f = pm.chunk_verify_time_fn(n, t, chunk)
        fv = pm.verify_time_fn(n, t)
        for _ in range(10):
            ctx = [int(x) for x in rng.integers(1, 20_000, n)]
            cached = int(rng.integers(0, 50_000))
            assert f(cached, sum(ctx)) == pm.step_time_s([(chunk, cached)] + [(t, c) for c in ctx], [], n)
            assert fv(sum(ctx)) == pm.step_time_s([(t, c) for c in ctx], [], n)
            assert pm.verify_step_times_s(n, t, np.array([sum(ctx)]))[0] == pm.step_time_s([(t, c) for c in ctx], [], n)


def test_attention_dp_ranks_price_verify_chunks_as_decodes():
    def dp(**overrides):
        return build_perf_model("deepseek-v3", "h200", 4, "fp8",
                                PerfConfig(engine="trtllm", data_parallel_size=2, expert_parallel=True, overrides=overrides))
    base, on = dp(), dp(**PROMPT_ONLY)
    batches = [([(4, 900)] * 3, [700]), ([(256, 0), (4, 1200)], [])]
    assert on.lockstep_step_time_s(batches, [3, 1]) - base.lockstep_step_time_s(batches, [3, 1]) > 0  # rank 2's prompt
    only_verify = [([(4, 900)] * 3, [700]), ([(4, 1200)], [])]
    assert on.lockstep_step_time_s(only_verify, [3, 1]) == base.lockstep_step_time_s(only_verify, [3, 1])
    assert on.step_time_s([(4, 900)] * 4, [700], 4) == base.step_time_s([(4, 900)] * 4, [700], 4)
    assert on.step_time_s([(4, 900)] * 4, [700]) > base.step_time_s([(4, 900)] * 4, [700])  # (as prompts: they pay)
