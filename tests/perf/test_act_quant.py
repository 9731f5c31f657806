"""act_quant_token_s: each quantised linear layer's activation quantisation costs that much GPU time
per prompt token (TensorRT-LLM's block-scaled FP8 linear on Blackwell before 1.3); off by default."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.perf import build_perf_model
from servesim.perf.config import PerfConfig
from servesim.perf.calibration import shipped_calibration, matched_values

RATE_S = 2.7e-08


def _model(model: str = "deepseek-v3", tp: int = 8, **overrides):
    return build_perf_model(model, "b200", tp, "fp8", PerfConfig(engine="trtllm", overrides=overrides))


def test_quantised_linears_follow_the_architecture():
    # DeepSeek-V3: 61 MLA layers x 4 projections (fused q_a/kv_a, q_b, kv_b, o), 3 dense FFN layers and
    # 58 MoE layers with a shared expert x 2 (gate-up, down): 61 x 6.
    assert _model().terms.quantised_linears() == 366
    # Llama-3.1-8B: 32 layers x (fused QKV, o, gate-up, down).
    assert _model("llama-3.1-8b", 1).terms.quantised_linears() == 128


@pytest.mark.parametrize("prefills, decodes", [([], [1000] * 64), ([(8192, 0)], [500] * 7), ([(1024, 0)] * 4, []), ([(300, 64)], [90])])
def test_off_by_default_and_zero_changes_nothing_bit_for_bit(prefills, decodes):
    plain, zero = _model(), _model(act_quant_token_s=0.0)
    assert plain.constants.act_quant_token_s == 0.0 and plain.terms.act_quant_s_per_token() == 0.0
    assert zero.step_time_s(prefills, decodes) == plain.step_time_s(prefills, decodes)


def test_prompt_tokens_pay_it_decodes_do_not():
    base, quant = _model(), _model(act_quant_token_s=RATE_S)
    # Decode-only steps: unchanged, bit for bit (the kernel data show no cost at decode sizes).
    assert quant.step_time_s([], [1024] * 128) == base.step_time_s([], [1024] * 128)
    # A step with prompt tokens: 366 linears x 27 ns x its prompt tokens (8,192: 81 ms), beside decodes too.
    for prefills, decodes, prompt in (([(8192, 0)], [], 8192), ([(1024, 0)] * 7, [900] * 5, 7168), ([(512, 3000)], [40], 512)):
        diff = quant.step_time_s(prefills, decodes) - base.step_time_s(prefills, decodes)
        assert diff == pytest.approx(366 * RATE_S * prompt, rel=1e-9)
    assert 366 * RATE_S * 8192 == pytest.approx(0.0810, abs=1e-4)
    # Reported as GEMM (linear) time.
    b, q = base.step_breakdown([(8192, 0)], [700] * 4), quant.step_breakdown([(8192, 0)], [700] * 4)
    assert q.linear_s - b.linear_s == pytest.approx(366 * RATE_S * 8192, rel=1e-9)
    assert q.attention_s == b.attention_s and q.total_s == quant.step_time_s([(8192, 0)], [700] * 4)


def assert_fast_paths_price_as_step_time(pm) -> None:
    """Every fast path (a chunk, a lone prompt step, a decode run, a verify pass) prices what
    `step_time_s` does, bit for bit (shared by the per-prompt-token terms' tests)."""
    ctxs = [700, 900, 1100] * 4
    assert pm.chunk_time_fn(12, 2048)(4096, sum(ctxs)) == pm.step_time_s([(2048, 4096)], ctxs)
    assert pm.prompt_step_s(12, 8192, sum(ctxs)) == pm.step_time_s([(8192, 0)], ctxs)
    assert pm.decode_step_times_s(np.array(ctxs), 3)[2] == pm.step_time_s([], [c + 2 for c in ctxs])
    verify = pm.verify_step_times_s(4, 3, np.array([4000]))
    assert verify is not None and verify[0] == pm.step_time_s([(3, 1000)] * 4, [], 4)


def test_fast_paths_stay_bit_identical_with_the_term_on():
    assert_fast_paths_price_as_step_time(_model(act_quant_token_s=RATE_S))


def test_shipped_only_for_tensorrt_llm_b200_fp8_before_the_quant_kernel_change():
    data = shipped_calibration("calibration_serving.yaml")
    # 1.2.0rc6.post3: the MTP campaign, played with its script; 1.1.0rc2.post2: the older release, before
    # TensorRT-LLM replaced the Triton quantisation on SM100 too (docs/fidelity-history.md, trt11_23)
    for version in ("1.2.0rc6.post2", "1.2.0rc6.post3", "1.1.0rc2.post2"):
        key = {"gpu": "b200", "engine": "trtllm", "version": version}
        assert matched_values(data, {**key, "dtype": "fp8"})["act_quant_token_s"] == RATE_S
        assert "act_quant_token_s" not in matched_values(data, {**key, "dtype": "fp4"})  # NVFP4: no FP8 block path
    # Hopper quantises with another kernel (AIConfigurator's H200 FP8-block tables show no such cost), and
    # SGLang's FP8 block linear (its B200 0.5.9 table) none either.
    for other in ({"gpu": "h200", "engine": "trtllm", "version": "1.1.0rc2.post2"},
                  {"gpu": "b200", "engine": "trtllm"},
                  {"gpu": "b200", "engine": "sglang", "version": "0.5.9"}):
        assert "act_quant_token_s" not in matched_values(data, {**other, "dtype": "fp8"})


def test_the_nvfp4_mtp_campaign_pays_an_eager_prompt_step_its_verify_steps_do_not():
    """1.2.0rc6.post3's NVFP4 entry prices a per-layer time on steps with prompt tokens (fitted:
    calibration_serving.yaml's mtp_eager note); FP8 and the plain post2 campaign do not."""
    data = shipped_calibration("calibration_serving.yaml")
    key = {"gpu": "b200", "engine": "trtllm", "version": "1.2.0rc6.post3"}
    assert matched_values(data, {**key, "dtype": "fp4"})["eager_layer_s"] == 7e-04
    for other in ({**key, "dtype": "fp8"}, {**key, "version": "1.2.0rc6.post2", "dtype": "fp4"}):
        assert matched_values(data, other).get("eager_layer_s", 0.0) == 0.0
    pm = _model(eager_layer_s=7e-04)
    base = _model()
    prompt = pm.step_time_s([(1024, 0)], [2000] * 8) - base.step_time_s([(1024, 0)], [2000] * 8)
    assert prompt > 0.0
    verify = pm.step_time_s([(3, 1000)] * 4, [], 4) - base.step_time_s([(3, 1000)] * 4, [], 4)
    assert verify == 0.0
