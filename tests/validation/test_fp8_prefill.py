"""TensorRT-LLM B200 FP8 (block-scaled) DeepSeek rows of the 1.2.0rc6 releases pay the activation
quantisation of each FP8 linear per prompt token (`act_quant_token_s`, docs/fidelity-history.md, "FP8 prefill
on Blackwell"); the NVFP4 rows of the same release and the other engines do not."""

from __future__ import annotations

import pytest

from servesim.validation.silicon import read_rows, row_scenario, scenario_perf_model
from tests.validation.silicon_rows import SILICON


def _row(quant: str, tp: int):
    for r in read_rows(SILICON):
        if (r.backend, r.system, r.version, r.gemm_quant, r.tp, r.isl, r.osl, r.concurrency, r.attention_dp) == (
                "trtllm", "b200_sxm", "1.2.0rc6.post2", quant, tp, 8192, 1024, 8, 1):
            return r
    raise AssertionError(f"no {quant} TP {tp} row")


def _prefill_growth_s(row, **overrides) -> float:
    pm = scenario_perf_model(row_scenario(row, overrides=overrides))
    return pm.step_time_s([(8192, 0)], []) - pm.step_time_s([(1024, 0)], [])


def test_fp8_rows_pay_the_quantisation_nvfp4_rows_do_not():
    fp8, fp4 = _row("fp8", 8), _row("nvfp4", 4)
    assert scenario_perf_model(row_scenario(fp8)).constants.act_quant_token_s == 2.7e-08
    assert scenario_perf_model(row_scenario(fp4)).constants.act_quant_token_s == 0.0
    # Both take the release's context-attention efficiency (AIConfigurator's context MLA kernel, TP 8, 8k).
    assert scenario_perf_model(row_scenario(fp8)).constants.eta_attn_compute == 0.48
    assert scenario_perf_model(row_scenario(fp4)).constants.eta_attn_compute == 0.48
    # 8,192 instead of 1,024 prompt tokens: 366 linears x 27 ns x 7,168 tokens = 71 ms more on FP8 (the
    # growth 67 ms before it, 146 ms with it; measured at 4 users 159 ms); NVFP4 TP 4 91 ms (76 before; measured 93).
    quant_s = _prefill_growth_s(fp8) - _prefill_growth_s(fp8, act_quant_token_s=0.0)
    assert quant_s == pytest.approx(366 * 2.7e-08 * 7168, rel=1e-9)
    assert _prefill_growth_s(fp8, moe_copy_bytes=0.0) == pytest.approx(0.146, abs=2e-3)
    assert _prefill_growth_s(fp4, moe_copy_bytes=0.0) == pytest.approx(0.091, abs=2e-3)
    # The MoE's expanded rows (moe_copy_bytes 4, every TensorRT-LLM B200 row: docs/fidelity-history.md, "MoE at TP on
    # TensorRT-LLM B200") add 58 layers x 229 KB x 7,168 tokens at 6.8 TB/s = 14 ms at TP 8 and TP 4 alike.
    assert _prefill_growth_s(fp8) == pytest.approx(0.160, abs=2e-3)
    assert _prefill_growth_s(fp4) == pytest.approx(0.105, abs=2e-3)
