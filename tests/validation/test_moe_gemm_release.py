"""SGLang H200 0.5.6.post2's MoE expert GEMMs (`eta_moe_compute` in calibration_serving.yaml): only
that release's rows select it, and it slows the first token of its Qwen3-235B-A22B-FP8 runs."""

from __future__ import annotations

import pytest

from servesim.perf import build_perf_model
from servesim.validation.run import simulate_row
from servesim.validation.silicon import ClientOptions, row_scenario, serving_calibration_path

from tests.validation.silicon_rows import silicon_row

QWEN = {"backend": "sglang", "backend_version": "0.5.6.post2", "model_path": "Qwen/Qwen3-235B-A22B-FP8",
        "system": "h200_sxm", "gemm_quant_mode": "fp8_block", "moe_quant_mode": "fp8_block", "tp_size": "2",
        "isl": "4000", "osl": "100", "concurrency": "2", "batch_size": "2"}


def _constants(**changes):
    s = row_scenario(silicon_row(0, **{**QWEN, **changes}))
    return build_perf_model(s.model, s.gpu, s.tp, s.dtype, s.perf).constants


@pytest.mark.parametrize(("changes", "expected"), [
    ({}, 0.16),                                                  # the release's entry
    ({"backend_version": "0.5.9"}, 0.0),                         # another release of the same GPU and engine
    ({"system": "b200_sxm"}, 0.0),                               # another GPU
])
def test_only_the_release_selects_the_moe_gemm_efficiency(changes, expected):
    assert _constants(**changes).eta_moe_compute == expected


def test_the_shipped_file_holds_only_the_releases_entries():
    # this release's, and vLLM 0.18.0's on Hopper (H100 / H200 int4: Marlin MXFP4 experts; H100 fp8: MiniMax)
    text = open(serving_calibration_path()).read()
    assert text.count("eta_moe_compute:") == 4


def test_the_release_entry_slows_a_long_moe_prefill():
    options = ClientOptions(min_requests=2, requests_per_user=1, trailing_rounds=0)
    row = silicon_row(0, **QWEN)
    shipped = simulate_row(row, options)
    dense_eta = simulate_row(row, options, overrides={"eta_moe_compute": 0.0})
    # two 4,000-token prompts on TP 2: the expert GEMMs dominate, so the first token is much later
    assert shipped.ttft_s > 1.5 * dense_eta.ttft_s
    # decode reads the experts' weights: TPOT within 10 %
    assert shipped.tpot_s == pytest.approx(dense_eta.tpot_s, rel=0.1)
