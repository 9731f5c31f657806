"""moe_floor_s: the fused MoE kernel's fixed GPU time per MoE layer, a smooth max with the layer's roofline
(vLLM's block-FP8 fused MoE on H100: AIConfigurator's H100 vLLM 0.19.0 table at MiniMax-M2.5's shape and EP 4; on
B200: its B200 table of FlashInfer's TRT-LLM-gen FP8-block MoE at that shape); off by default, shipped for the H100 vLLM
0.18.0 FP8 and the B200 vLLM 0.19.0 FP8 entries only."""

from __future__ import annotations

import pytest

from servesim.perf import build_perf_model
from servesim.perf.calibration import matched_values, shipped_calibration
from servesim.perf.config import PerfConfig
from servesim.validation.silicon import serving_calibration_path
from tests.perf.test_act_quant import assert_fast_paths_price_as_step_time

FLOOR_S = 4.7e-05
B200_FLOOR_S = 4.4e-05


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


def test_shipped_for_vllm_h100_0_18_0_and_b200_0_19_0_fp8_only():
    data = shipped_calibration("calibration_serving.yaml")
    key = {"gpu": "h100-sxm", "engine": "vllm", "version": "0.18.0"}
    assert matched_values(data, {**key, "dtype": "fp8"})["moe_floor_s"] == FLOOR_S
    assert "moe_floor_s" not in matched_values(data, {**key, "dtype": "int4"})  # (gpt-oss-120b's Marlin experts)
    b200 = {"gpu": "b200", "engine": "vllm", "version": "0.19.0"}
    assert matched_values(data, {**b200, "dtype": "fp8"})["moe_floor_s"] == B200_FLOOR_S
    assert matched_values(data, {**b200, "dtype": "fp8"})["layer_floor_s"] == 4.5e-05  # (the release's 6.07e-05, refitted)
    fp4 = matched_values(data, {**b200, "dtype": "fp4"})  # the NVFP4 rows run another kernel: the release's floor
    assert "moe_floor_s" not in fp4 and fp4["layer_floor_s"] == 6.07e-05
    for gpu, version in (("h200", "0.18.0"), ("b300", "0.19.0"), ("b200", "0.17.0"), ("h100-sxm", "")):
        assert "moe_floor_s" not in matched_values(data, {"gpu": gpu, "engine": "vllm", "version": version, "dtype": "fp8"})


def _b200(**overrides):
    return build_perf_model("minimax-m2.5", "b200", 4, "fp8", PerfConfig(
        engine="vllm", engine_version="0.19.0", calibration=serving_calibration_path(), overrides=overrides))


def test_b200_0_19_0_fp8_moves_the_fixed_time_from_every_layer_into_the_moe_kernel():
    # The release's MiniMax FP8 TP 4 model with the floor shipped, against the same release with its old constants
    # (one floor of 60.7 us on every layer of every step, no MoE floor).
    on, old = _b200(), _b200(moe_floor_s=0.0, layer_floor_s=6.07e-05)
    assert on.constants.moe_floor_s == B200_FLOOR_S and on.constants.smoothing_k == 2.0
    for tokens in (1, 4, 512):
        roof = _moe_layer_s(old, tokens)
        assert _moe_layer_s(on, tokens) == pytest.approx((roof**2 + B200_FLOOR_S**2) ** 0.5, rel=1e-12)
    # A 4-sequence decode pays more (the table's 48 us a layer at 4 tokens where the roofline gives 18), an 8k prompt
    # step less (the floor fades into the MoE's own time, the per-layer floor drops by 15.7 us on all 62 layers).
    decode_old, decode_on = old.step_time_s([], [1000] * 4), on.step_time_s([], [1000] * 4)
    assert 1.05 < decode_on / decode_old < 1.25
    assert on.step_time_s([(8192, 0)], []) < old.step_time_s([(8192, 0)], [])
    assert _b200(moe_floor_s=0.0).step_time_s([], [1000] * 4) < decode_old  # (the lower per-layer floor alone)
