"""SGLang B300 0.5.10.post1 split by precision (calibration_serving.yaml, docs/fidelity-history.md "SGLang B300
0.5.10.post1 FP8, the B300 DeepSeek rows' prefill, and Qwen3.5 with an EP cost"): its block-scaled FP8 deployments take 80 us of GPU
time per layer, the release's BF16 and NVFP4 deployments and every other SGLang key keep theirs."""

from __future__ import annotations

import pytest

from servesim.perf import build_perf_model
from servesim.simulation import simulate
from servesim.validation.run import client_metrics
from servesim.validation.silicon import ClientOptions, parse_row, row_request_counts, row_scenario

# qwen3_5_b300_sglang_fp8_agg_1024x1024_c4_cfg716 as the file records it: 8.65 ms a token at 4 users
QWEN_FP8 = {"id": "qwen3_5_b300_sglang_fp8_agg_1024x1024_c4_cfg716", "backend": "sglang",
            "backend_version": "0.5.10.post1", "model_path": "Qwen/Qwen3.5-397B-A17B", "system": "b300_sxm",
            "precision": "fp8", "mode": "agg", "isl": "1024", "osl": "1024", "gemm_quant_mode": "fp8",
            "moe_quant_mode": "fp8_block", "batch_size": "4", "tp_size": "4", "pp_size": "1",
            "attention_dp_size": "1", "moe_tp_size": "4", "moe_ep_size": "1", "silicon_ttft_ms": "205.3",
            "silicon_tpot_ms": "8.653", "concurrency": "4"}
MEASURED_TPOT_S = 0.008653


def _floor(**changes: str) -> float:
    s = row_scenario(parse_row({**QWEN_FP8, **changes}))
    return build_perf_model(s.model, s.gpu, s.tp, s.dtype, s.perf).constants.layer_floor_s


@pytest.mark.parametrize(("system", "version", "quant", "layer_floor_s"), [
    ("b300_sxm", "0.5.10.post1", "fp8", 8.0e-05),    # the split: FP8 layers of the release
    ("b300_sxm", "0.5.10.post1", "", 4.0e-05),       # BF16 of the same release: the release's floor
    ("b300_sxm", "0.5.10.post1", "nvfp4", 4.0e-05),  # NVFP4 of the same release
    ("b300_sxm", "0.5.9", "fp8", 2.0e-05),           # another B300 release, FP8 too
    ("b200_sxm", "0.5.9", "fp8", 4.0e-05),           # another GPU
])
def test_only_the_release_s_fp8_deployments_take_the_larger_floor(system, version, quant, layer_floor_s):
    assert _floor(system=system, backend_version=version, gemm_quant_mode=quant) == layer_floor_s


def _tpot_s(overrides=None) -> float:
    row = parse_row(QWEN_FP8)
    s = row_scenario(row, ClientOptions(), overrides=overrides)
    return client_metrics(simulate(s).requests, row_request_counts(row, ClientOptions()).measured_end)[1]


def test_the_fp8_floor_brings_a_4_user_decode_to_the_measured_tpot():
    # with the release's 40 us the 4-user FP8 decode plays 29 % fast (6.1 ms, the BF16 twin's price)
    shipped, release_floor = _tpot_s(), _tpot_s({"layer_floor_s": 4.0e-05})
    assert abs(shipped / MEASURED_TPOT_S - 1) < 0.05
    assert release_floor / MEASURED_TPOT_S - 1 < -0.2
