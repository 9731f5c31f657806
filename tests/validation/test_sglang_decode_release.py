"""SGLang decode constants per release (calibration_serving.yaml, docs/fidelity-history.md "SGLang decode
steps"): H200 0.5.9 and B300 0.5.10.post1 read weights at TensorRT-LLM's efficiency for the GPU with a
larger GPU time per layer; every other SGLang key keeps the per-GPU efficiency (0.6 x the fit's start)."""

from __future__ import annotations

import pytest

from servesim.perf import build_perf_model
from servesim.validation.silicon import row_scenario

from tests.validation.silicon_rows import silicon_row

# Qwen3.5-397B BF16 on 4 GPUs, 1k/1k at 64 users: a B300 0.5.10.post1 shape of the file
QWEN = {"backend": "sglang", "backend_version": "0.5.10.post1", "model_path": "Qwen/Qwen3.5-397B-A17B",
        "system": "b300_sxm", "gemm_quant_mode": "", "moe_quant_mode": "", "tp_size": "4", "moe_tp_size": "4",
        "moe_ep_size": "1", "isl": "1024", "osl": "1024", "concurrency": "64", "batch_size": "64"}


def _model(overrides=None, **changes):
    s = row_scenario(silicon_row(0, **{**QWEN, **changes}), overrides=overrides)
    return s, build_perf_model(s.model, s.gpu, s.tp, s.dtype, s.perf)


@pytest.mark.parametrize(("system", "version", "eta_memory", "layer_floor_s"), [
    ("b300_sxm", "0.5.10.post1", 0.85, 4.0e-05),    # the release's entry
    ("h200_sxm", "0.5.9", 0.8477, 6.0e-05),         # the release's entry
    ("b300_sxm", "0.5.9", 0.6, 2.0e-05),            # another release of the same GPU: its own (sgh19; refitted with the one-shot by sgbw20, the same 0.6)
    ("b200_sxm", "0.5.9", 0.51, 4.0e-05),           # another GPU, same release name
    ("h200_sxm", "0.5.6.post2", 0.5086, 5.0e-06),   # another release of H200
])
def test_only_the_two_releases_take_the_gpu_efficiency(system, version, eta_memory, layer_floor_s):
    c = _model(system=system, backend_version=version)[1].constants
    assert (c.eta_memory, c.layer_floor_s) == (eta_memory, layer_floor_s)


@pytest.mark.parametrize(("system", "trtllm_system"), [("h200_sxm", "h200_sxm"), ("b300_sxm", "b200_sxm")])
def test_the_efficiency_is_tensorrt_llm_s_for_the_gpu(system, trtllm_system):
    version = {"h200_sxm": "0.5.9", "b300_sxm": "0.5.10.post1"}[system]
    sglang = _model(system=system, backend_version=version)[1].constants.eta_memory
    trtllm = _model(backend="trtllm", system=trtllm_system, backend_version="")[1].constants.eta_memory
    assert sglang == trtllm


def test_a_64_user_decode_step_is_faster_and_its_floor_higher():
    scenario, shipped = _model()
    _, before = _model(overrides={"eta_memory": 0.51, "layer_floor_s": 5.0e-06})
    ctxs = [1536] * 64
    # expert reads dominate at 64 users: about 0.51 / 0.85 of the time before (the floor adds 2 ms)
    assert shipped.step_time_s([], ctxs) < 0.8 * before.step_time_s([], ctxs)
    # one user: a GPU time per layer of 40 us over 60 layers is at least 2.4 ms
    assert shipped.terms.linear_s(1) >= 60 * 4.0e-05
    assert scenario.frontend.profile == "sglang@b300@0.5.10.post1"
    assert scenario.frontend.constants()[2] == 0.1  # the release's front end, refitted with these constants
