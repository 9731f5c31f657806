"""vLLM on Blackwell, FP8 and NVFP4 deployments of one release (calibration_serving.yaml, docs/fidelity-history.md
"vLLM on Blackwell, FP8 and NVFP4 deployments"): B200 0.17.0 and B300 0.19.0 give their block-scaled FP8
deployments a GPU time per layer of 35 us and the release the step overhead its NVFP4 deployments measure; B200
0.19.0 gives its FP8 deployments a lower floor beside the fused MoE kernel's own (`moe_floor_s`, vmmx29).
Since these releases schedule asynchronously (engines.yaml, 0.14.0 on; docs/fidelity-history.md, vasync26) each release's
step overhead is also GPU time per layer, f x step_overhead_s / the layers of its model, so the split survives as
25 us a layer between the precisions of one release and model."""

from __future__ import annotations

import pytest

from tests.validation.silicon_rows import minimax_perf_model as _model


def _constants(**changes):
    c = _model(**changes).constants
    return c.layer_floor_s, c.step_overhead_s


ENGINE_FLOOR = _constants(backend_version="")[0]  # a release before async scheduling: the engine's floor


@pytest.mark.parametrize(("system", "version", "quant", "layer_floor_s", "step_overhead_s"), [
    ("b200_sxm", "0.17.0", "fp8", 8.33e-05, 0.002996),    # 35 us + 2.996 ms / 62 layers (MiniMax-M2.5)
    ("b200_sxm", "0.17.0", "nvfp4", 5.91e-05, 0.002996),  # 10 us + 2.996 ms / 61 layers (the release's Kimi-K2.5)
    ("b300_sxm", "0.19.0", "fp8", 9.15e-05, 0.0035),      # 35 us + 3.5 ms / 62
    ("b300_sxm", "0.19.0", "nvfp4", 6.65e-05, 0.0035),    # 10 us + 3.5 ms / 62
    ("b200_sxm", "0.19.0", "nvfp4", 6.07e-05, 0.002996),  # 10 us + 1.05 x 2.996 ms / 62
    ("b200_sxm", "0.19.0", "fp8", 4.5e-05, 0.002996),     # split by vmmx29: the MoE kernel's floor takes the rest
    ("b300_sxm", "nightly-5b8c30d62b754b57", "fp8", 8.25e-05, 0.004494),  # B300's fallback overhead: 10 us + 4.494 ms / 62
])
def test_the_releases_split_by_precision(system, version, quant, layer_floor_s, step_overhead_s):
    assert _constants(system=system, backend_version=version, gemm_quant_mode=quant) == (layer_floor_s, step_overhead_s)
    assert ENGINE_FLOOR < 2.0e-05


def test_the_async_release_keeps_its_per_step_time_on_the_gpu():
    ctxs = [1536] * 4
    # the synchronous play of B200 0.17.0 FP8 before: the release's overhead as CPU time, 15 us a sequence on the CPU
    sync = {"overlap_cpu": 0.0, "layer_floor_s": 3.5e-05, "seq_gpu_s": 1.0e-05}
    fp8, fp8_sync = _model(), _model(overrides=sync)
    layers = fp8.terms.model.num_layers
    assert fp8.constants.overlap_cpu == 1 and layers == 62
    # async: the overhead is hidden, the floor carries it (every layer and the LM head's GEMM pay the floor,
    # terms.lm_head_gemm_s), and half of the 15 us a sequence is GPU time (B200's g 0.5)
    moved = (layers + 1) * (8.33e-05 - 3.5e-05) - 0.002996 + 4 * (1.75e-05 - 1.0e-05) - 4 * 15e-06
    assert fp8.step_time_s([], ctxs) - fp8_sync.step_time_s([], ctxs) == pytest.approx(moved, abs=1e-9)
    assert abs(moved) < 1e-4  # the 4-user decode step keeps about its time (+17 us)


@pytest.mark.parametrize("num_tokens", [256, 1024, 2780, 8192])
def test_b300_fp8_gemms_run_at_b200s_efficiency_on_0_19_0(num_tokens):
    # AIConfigurator's vLLM 0.19.0 tables time B300's block-scaled FP8 GEMMs at B200's speed (0.94-0.99 of its time) on
    # the same 4.5 PFLOP/s FP8 peak, so the B300 0.19.0 FP8 entry takes the (b200, vllm) efficiency curve (vb3_29)
    b300 = _model(system="b300_sxm", backend_version="0.19.0", gemm_quant_mode="fp8").terms
    b200 = _model(system="b200_sxm", backend_version="0.19.0", gemm_quant_mode="fp8").terms
    assert b300.eta_compute_at(num_tokens) == b200.eta_compute_at(num_tokens)
    assert 0.28 < b300.eta_compute_at(num_tokens) < 0.7


@pytest.mark.parametrize(("version", "quant"), [("0.19.0", "nvfp4"), ("nightly-5b8c30d62b754b57", "fp8")])
def test_other_b300_deployments_keep_the_fitted_flat_efficiency(version, quant):
    terms = _model(system="b300_sxm", backend_version=version, gemm_quant_mode=quant).terms
    assert terms.eta_compute_at(256) == terms.eta_compute_at(8192) == 0.84
