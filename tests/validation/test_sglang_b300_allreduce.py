"""SGLang 0.5.9's all-reduce on Blackwell (calibration_serving.yaml, docs/fidelity-history.md "SGLang 0.5.9's
all-reduce on Blackwell, read in the sources (issue 14, sgbw20)"): the release runs its custom (one-shot)
all-reduce on B200 and B300 at 4 and 8 GPUs, which AIConfigurator's SGLang 0.5.9 tables measure at about
the same cost at 4 and 8 GPUs for a small decode's messages. So every SGLang key prices the one-shot (the
ring sgh19 had chosen on the rows for B300 0.5.9 is not what ran), and B300 0.5.9 streams its weights at
the efficiency refitted with the one-shot (0.6)."""

from __future__ import annotations

import pytest

from servesim.perf import build_perf_model
from servesim.validation.silicon import row_scenario

from tests.validation.silicon_rows import silicon_row

# Qwen3.5-397B FP8, 1k/1k at 4 users (hidden 4,096: a decode step's all-reduce carries 4 x 4,096 BF16 = 32 KB)
QWEN = {"backend": "sglang", "backend_version": "0.5.9", "model_path": "Qwen/Qwen3.5-397B-A17B",
        "system": "b300_sxm", "gemm_quant_mode": "fp8", "moe_quant_mode": "fp8_block", "tp_size": "4",
        "moe_tp_size": "4", "moe_ep_size": "1", "isl": "1024", "osl": "1024", "concurrency": "4", "batch_size": "4"}
USERS = 4
# AIConfigurator's SGLang 0.5.9 custom_allreduce table (B300, bfloat16, 16,384 elements, CUDA graph), seconds
MEASURED_S = {4: 7.9e-6, 8: 8.5e-6}


def _model(tp: int, **changes):
    s = row_scenario(silicon_row(0, **{**QWEN, "tp_size": str(tp), "moe_tp_size": str(tp), **changes}))
    return build_perf_model(s.model, s.gpu, s.tp, s.dtype, s.perf)


def _allreduce_s(tp: int, **changes) -> float:
    """One of a 4-user decode step's all-reduces (two a layer: no expert all-to-all at EP 1)."""
    terms = _model(tp, **changes).terms
    return terms.communication_s(USERS) / (2 * terms.model.num_layers)


@pytest.mark.parametrize(("system", "version"), [
    ("b300_sxm", "0.5.9"),            # sgh19's ring dropped
    ("b300_sxm", "0.5.10.post1"),
    ("b300_sxm", "nightly-dev"),
    ("b200_sxm", "0.5.9"),
    ("h200_sxm", "0.5.9"),
])
def test_every_release_prices_the_one_shot(system, version):
    assert _model(8, system=system, backend_version=version).constants.custom_allreduce == 1.0


@pytest.mark.parametrize("system", ["b300_sxm", "b200_sxm"])
def test_tp_8_all_reduces_cost_about_what_tp_4_ones_do(system):
    # measured 0.6 us more at 8 GPUs than at 4; the ring charged 16 us more (2 x 4 more link hops of 2 us)
    extra = _allreduce_s(8, system=system) - _allreduce_s(4, system=system)
    assert extra == pytest.approx(MEASURED_S[8] - MEASURED_S[4], abs=0.5e-6)


def test_the_release_streams_weights_at_its_refitted_efficiency():
    # a row outside the B200 scripts' sweeps, which the file's Qwen3.5 rows play with trtllm-gen's 0.85 (sgb3_28)
    assert _model(4, concurrency="512", batch_size="512").constants.eta_memory == 0.6
    assert _model(4).constants.eta_memory == 0.85
    assert _model(4, backend_version="0.5.10.post1", gemm_quant_mode="").constants.eta_memory == 0.85
