"""moe_copy_bytes: each token's top_k expanded rows (hidden wide) that a GPU writes and reads beside
the expert GEMMs in a MoE layer (TensorRT-LLM's trtllm-gen MoE: the down GEMM's BF16 rows read back by
finalize), a cost the experts' TP split does not divide; off by default."""

from __future__ import annotations

import pytest

from servesim.perf import build_perf_model
from servesim.perf.config import PerfConfig
from servesim.perf.calibration import shipped_calibration, matched_values
from tests.perf.test_act_quant import assert_fast_paths_price_as_step_time

COPY_BYTES = 4.0


def _model(model: str = "deepseek-v3", tp: int = 8, dtype: str = "fp4", **overrides):
    return build_perf_model(model, "b200", tp, dtype, PerfConfig(engine="trtllm", overrides=overrides))


def _expected_s_per_token(pm, ep: int = 1) -> float:
    # DeepSeek-V3: 58 MoE layers x top_k 8 x hidden 7,168 x 4 bytes, at eta_memory x 8 TB/s.
    return 58 * 8 * 7168 * COPY_BYTES / ep / (pm.constants.eta_memory * 8000.0e9)


@pytest.mark.parametrize("prefills, decodes", [([], [1000] * 64), ([(8192, 0)], [500] * 7), ([(300, 64)], [90])])
def test_off_by_default_and_zero_changes_nothing_bit_for_bit(prefills, decodes):
    plain, zero = _model(), _model(moe_copy_bytes=0.0)
    assert plain.constants.moe_copy_bytes == 0.0 and plain.terms.moe_copy_s_per_token() == 0.0
    assert zero.step_time_s(prefills, decodes) == plain.step_time_s(prefills, decodes)


def test_every_step_token_pays_the_rows_whatever_the_tp_split():
    for tp in (4, 8):
        base, on = _model(tp=tp), _model(tp=tp, moe_copy_bytes=COPY_BYTES)
        for prefills, decodes, tokens in (([(8192, 0)], [], 8192), ([], [1000] * 256, 256), ([(1024, 0)], [900] * 5, 1029)):
            diff = on.step_time_s(prefills, decodes) - base.step_time_s(prefills, decodes)
            assert diff == pytest.approx(_expected_s_per_token(on) * tokens, rel=1e-9)
    # 8,192 prompt tokens: 58 layers x 229 KB a token, 16 ms a prefill at TP 4 and at TP 8 alike.
    assert _model().constants.eta_memory == 0.85
    assert _expected_s_per_token(_model()) * 8192 == pytest.approx(0.0160, abs=1e-4)
    # A dense model has no expanded rows.
    assert _model("llama-3.1-8b", 1, moe_copy_bytes=COPY_BYTES).terms.moe_copy_s_per_token() == 0.0


def test_expert_parallelism_divides_it_by_the_ranks():
    ep = build_perf_model("deepseek-v3", "b200", 8, "fp4", PerfConfig(engine="trtllm", expert_parallel=True,
                                                                     overrides={"moe_copy_bytes": COPY_BYTES}))
    assert ep.terms.moe_ep == 8
    assert ep.terms.moe_copy_s_per_token() * 58 == pytest.approx(_expected_s_per_token(ep, ep=8), rel=1e-12)


def test_tp8_moe_no_longer_half_of_tp4():
    # AIConfigurator's B200 TensorRT-LLM trtllm-gen NVFP4 MoE (DeepSeek-V3, 8,192 tokens, a layer):
    # TP 4 0.577 / 0.554 ms, TP 8 0.597 / 0.421 ms (1.2.0rc5 / 1.3.0rc10). Without the rows the model
    # gives TP 8 about half of TP 4 (per-GPU FLOPs halve); with them TP 8 is at least 0.7 of TP 4.
    def moe_ms(tp, **o):
        t = _model(tp=tp, **o).terms
        return t.linear_s(8192, moe=True) / t.model.num_moe_layers * 1e3
    assert moe_ms(8) / moe_ms(4) < 0.6
    assert moe_ms(8, moe_copy_bytes=COPY_BYTES) / moe_ms(4, moe_copy_bytes=COPY_BYTES) > 0.7


def test_fast_paths_stay_bit_identical_with_the_term_on():
    # The term sits in linear_s, memoised per step token count, which every fast path reads.
    pm = _model(moe_copy_bytes=COPY_BYTES)
    assert_fast_paths_price_as_step_time(pm)
    assert pm.step_time_s([], [700, 900, 1100] * 4) > _model().step_time_s([], [700, 900, 1100] * 4)


def test_shipped_for_tensorrt_llm_b200_1_2_0rc6_only():
    data = shipped_calibration("calibration_serving.yaml")
    for version in ("1.2.0rc6.post2", "1.2.0rc6.post3"):  # (post3: the MTP campaign, played with its script)
        key = {"gpu": "b200", "engine": "trtllm", "version": version}
        for dtype in ("fp4", "fp8"):
            assert matched_values(data, {**key, "dtype": dtype})["moe_copy_bytes"] == COPY_BYTES
    # Not the gpt-oss releases (CUTLASS MoE), nor 1.1.0rc2.post2 (worse, as for act_quant_token_s),
    # nor other engines or GPUs.
    for other in ({**key, "version": "1.1.0rc2.post2"}, {**key, "version": "1.2.0rc2.post2"},
                  {"gpu": "b200", "engine": "sglang", "version": "0.5.9"}, {"gpu": "b200", "engine": "vllm", "version": "0.17.0"},
                  {"gpu": "h200", "engine": "trtllm"}, {"gpu": "gb200", "engine": "trtllm", "version": "1.2.0rc6.post2"}):
        assert "moe_copy_bytes" not in matched_values(data, {**other, "dtype": "fp4"})
