"""vLLM on Blackwell, FP8 and NVFP4 deployments of one release (calibration_serving.yaml, docs/fidelity.md
"vLLM on Blackwell, FP8 and NVFP4 deployments"): B200 0.17.0 and B300 0.19.0 give their block-scaled FP8
deployments a GPU time per layer of 35 us and the release the step overhead its NVFP4 deployments measure;
every other vLLM key is priced as before, whatever its precision."""

from __future__ import annotations

import pytest

from tests.validation.silicon_rows import minimax_perf_model as _model


def _constants(**changes):
    c = _model(**changes).constants
    return c.layer_floor_s, c.step_overhead_s


ENGINE_FLOOR = _constants(backend_version="0.19.0")[0]  # a key without the split: the engine's floor


@pytest.mark.parametrize(("system", "version", "quant", "layer_floor_s", "step_overhead_s"), [
    ("b200_sxm", "0.17.0", "fp8", 3.5e-05, 0.002996),               # the split: FP8 layers, the release's overhead
    ("b200_sxm", "0.17.0", "nvfp4", ENGINE_FLOOR, 0.002996),        # NVFP4 of the same release: the overhead only
    ("b300_sxm", "0.19.0", "fp8", 3.5e-05, 0.0035),
    ("b300_sxm", "0.19.0", "nvfp4", ENGINE_FLOOR, 0.0035),
    ("b200_sxm", "0.19.0", "fp8", ENGINE_FLOOR, 0.002996),          # not split (held-out rows worse)
    ("b300_sxm", "nightly-5b8c30d62b754b57", "fp8", ENGINE_FLOOR, 0.004494),  # B300's fallback
])
def test_only_the_two_releases_split_by_precision(system, version, quant, layer_floor_s, step_overhead_s):
    assert _constants(system=system, backend_version=version, gemm_quant_mode=quant) == (layer_floor_s, step_overhead_s)
    assert ENGINE_FLOOR < 2.0e-05


def test_the_split_moves_fixed_time_from_the_release_to_the_fp8_layers():
    ctxs = [1536] * 4
    # before: the release's old overhead and the engine's floor for every precision
    before = {"step_overhead_s": 0.004494, "layer_floor_s": ENGINE_FLOOR}
    fp8, fp8_before = _model(), _model(overrides=before)
    layers = fp8.terms.model.num_layers
    # the floor is paid by every layer and by the LM head's GEMM (terms.lm_head_gemm_s)
    moved = (layers + 1) * (3.5e-05 - ENGINE_FLOOR) - (0.004494 - 0.002996)
    assert fp8.step_time_s([], ctxs) - fp8_before.step_time_s([], ctxs) == pytest.approx(moved, abs=1e-9)
    # MiniMax-M2.5's 62 layers: the FP8 decode step keeps about its fixed time (+73 us)
    assert layers == 62 and abs(moved) < 1e-4
    # an NVFP4 deployment of the release loses the 1.5 ms the FP8 layers carried
    fp4, fp4_before = _model(gemm_quant_mode="nvfp4"), _model(overrides=before, gemm_quant_mode="nvfp4")
    assert fp4_before.step_time_s([], ctxs) - fp4.step_time_s([], ctxs) == pytest.approx(0.004494 - 0.002996, abs=1e-9)
