"""SGLang B300 0.5.9's all-reduce (calibration_serving.yaml, docs/fidelity.md "SGLang B300 0.5.9's
all-reduce"): the release's small all-reduces are priced as the ring (2(n-1) link hops), so its TP 8
decodes are slower than its TP 4 ones, as measured, and its weights stream at the efficiency refitted
with it (0.6); every other SGLang key keeps the one-shot."""

from __future__ import annotations

import pytest

from servesim.perf import build_perf_model
from servesim.validation.silicon import row_scenario

from tests.validation.silicon_rows import silicon_row

# Qwen3.5-397B FP8, 1k/1k at 4 users: the release's rows measure 5.31 ms a token at TP 4, 7.91 ms at TP 8
QWEN = {"backend": "sglang", "backend_version": "0.5.9", "model_path": "Qwen/Qwen3.5-397B-A17B",
        "system": "b300_sxm", "gemm_quant_mode": "fp8", "moe_quant_mode": "fp8_block", "tp_size": "4",
        "moe_tp_size": "4", "moe_ep_size": "1", "isl": "1024", "osl": "1024", "concurrency": "4", "batch_size": "4"}
CONTEXTS = [1536] * 4  # four users half way through a 1k/1k request


def _model(tp: int, overrides=None, **changes):
    s = row_scenario(silicon_row(0, **{**QWEN, "tp_size": str(tp), "moe_tp_size": str(tp), **changes}),
                     overrides=overrides)
    return build_perf_model(s.model, s.gpu, s.tp, s.dtype, s.perf)


@pytest.mark.parametrize(("system", "version", "custom_allreduce"), [
    ("b300_sxm", "0.5.9", 0.0),           # the release's entry
    ("b300_sxm", "0.5.10.post1", 1.0),    # another release of the same GPU
    ("b300_sxm", "nightly-dev", 1.0),
    ("b200_sxm", "0.5.9", 1.0),           # the same release name on another GPU
    ("h200_sxm", "0.5.9", 1.0),
])
def test_only_the_release_prices_the_ring(system, version, custom_allreduce):
    assert _model(8, system=system, backend_version=version).constants.custom_allreduce == custom_allreduce


def test_the_release_streams_weights_at_its_refitted_efficiency():
    assert _model(4).constants.eta_memory == 0.6
    assert _model(4, backend_version="0.5.10.post1", gemm_quant_mode="").constants.eta_memory == 0.85


def test_tp_8_decodes_slower_than_tp_4_as_measured():
    tp4, tp8 = (_model(tp).step_time_s([], CONTEXTS) for tp in (4, 8))
    assert tp8 > tp4 + 0.5e-3  # measured: 7.91 against 5.31 ms
    assert tp8 == pytest.approx(7.91e-3, rel=0.05)
    # with the one-shot all-reduce (and the per-GPU efficiency) TP 8 sits on the release's 6 ms CPU floor
    one_shot = _model(8, overrides={"custom_allreduce": 1.0, "eta_memory": 0.51}).step_time_s([], CONTEXTS)
    assert tp8 > 1.2 * one_shot
