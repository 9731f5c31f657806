"""moe_floor_s: the fused MoE kernel's fixed GPU time per MoE layer, a smooth max with the layer's roofline
(vLLM's block-FP8 fused MoE on H100: AIConfigurator's H100 vLLM 0.19.0 table at MiniMax-M2.5's shape and EP 4);
off by default, shipped for the H100 vLLM 0.18.0 FP8 entry only."""

from __future__ import annotations

import pytest

from servesim.perf import build_perf_model
from servesim.perf.calibration import matched_values, shipped_calibration
from servesim.perf.config import PerfConfig
from tests.perf.test_act_quant import assert_fast_paths_price_as_step_time

FLOOR_S = 4.7e-05


def _model(model: str = "minimax-m2.5", **overrides):
    return build_perf_model(model, "h100-sxm", 4, "fp8", PerfConfig(engine="vllm", expert_parallel=True,
                                                                    overrides=overrides))


def _moe_layer_s(pm, tokens: int) -> float:
    t = pm.terms
    return t.linear_s(tokens, moe=True) / t.model.num_moe_layers


@pytest.mark.parametrize("prefills, decodes", [([], [1000] * 4), ([(8192, 0)], [500] * 7), ([(300, 64)], [90])])
def test_off_by_default_and_zero_changes_nothing_bit_for_bit(prefills, decodes):
    plain, zero = _model(), _model(moe_floor_s=0.0)
    assert plain.constants.moe_floor_s == 0.0
    assert zero.step_time_s(prefills, decodes) == plain.step_time_s(prefills, decodes)


def test_smooth_max_with_the_layer_roofline():
    plain, on = _model(), _model(moe_floor_s=FLOOR_S)
    k = on.constants.smoothing_k
    assert k == 1.4
    for tokens in (1, 4, 64, 8192):
        roof = _moe_layer_s(plain, tokens)
        assert _moe_layer_s(on, tokens) == pytest.approx((roof**k + FLOOR_S**k) ** (1 / k), rel=1e-12)
    # A few tokens pay most of it, a prompt step almost none (default constants): 1 token 21 -> 57 us a layer,
    # 4 tokens 63 -> 90, 64 tokens + 4 %, 8,192 tokens + 1.6 %.
    assert _moe_layer_s(on, 1) == pytest.approx(57.5e-6, abs=0.5e-6)
    assert _moe_layer_s(on, 4) == pytest.approx(90.3e-6, abs=0.5e-6)
    assert _moe_layer_s(on, 64) / _moe_layer_s(plain, 64) < 1.05
    assert _moe_layer_s(on, 8192) / _moe_layer_s(plain, 8192) < 1.02
    # Only the MoE layers: a dense model is unchanged.
    assert build_perf_model("llama-3.1-8b", "h100-sxm", 1, "fp8", PerfConfig(engine="vllm", overrides={"moe_floor_s": FLOOR_S})
                            ).step_time_s([], [500] * 8) == build_perf_model("llama-3.1-8b", "h100-sxm", 1, "fp8",
                                                                             PerfConfig(engine="vllm")).step_time_s([], [500] * 8)


def test_fast_paths_stay_bit_identical_with_the_term_on():
    # The term sits in linear_s, memoised per step token count, which every fast path reads.
    pm = _model(moe_floor_s=FLOOR_S)
    assert_fast_paths_price_as_step_time(pm)
    assert pm.step_time_s([], [700, 900, 1100] * 4) > _model().step_time_s([], [700, 900, 1100] * 4)


def test_shipped_for_vllm_h100_0_18_0_fp8_only():
    data = shipped_calibration("calibration_serving.yaml")
    key = {"gpu": "h100-sxm", "engine": "vllm", "version": "0.18.0"}
    assert matched_values(data, {**key, "dtype": "fp8"})["moe_floor_s"] == FLOOR_S
    assert "moe_floor_s" not in matched_values(data, {**key, "dtype": "int4"})  # (gpt-oss-120b's Marlin experts)
    for gpu, version in (("h200", "0.18.0"), ("b200", "0.19.0"), ("h100-sxm", "")):
        assert "moe_floor_s" not in matched_values(data, {"gpu": gpu, "engine": "vllm", "version": version, "dtype": "fp8"})
