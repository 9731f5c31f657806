"""The release-less vLLM B200 entry (calibration_serving.yaml `vllm_decode_split`; docs/fidelity-history.md, "vLLM's
unversioned Llama-3.1-70B rows"): the Llama-3.1-70B NVFP4 rows InferenceMAX measured on 2025-10-29 decode with
the split of their own TPOT by TP (a 1 us all-reduce launch, 0.65 of the bandwidth, 3.86 ms a step); every other
(GPU, vLLM release) keeps its constants."""

from __future__ import annotations

import pytest

from servesim.perf import build_perf_model
from servesim.simulation import simulate
from servesim.validation.run import client_metrics
from servesim.validation.silicon import ClientOptions, parse_row, row_request_counts, row_scenario
from tests.validation.test_silicon_mapping import BASE

# 2026_04_06_llama_3_1_70b_b200_sxm_vllm_fp4_agg_1024x1024_c4_tp{1,8}_ep1 as the file records them
LLAMA_B200 = {**BASE, "model_path": "meta-llama/Llama-3.1-70B", "backend_version": "", "gemm_quant_mode": "nvfp4",
              "moe_quant_mode": "nvfp4", "isl": "1024", "osl": "1024", "concurrency": "4", "batch_size": "4",
              "moe_tp_size": "1", "moe_ep_size": "1"}
MEASURED_TPOT_S = {1: 0.01307, 8: 0.00631}


def _constants(**changes: str):
    s = row_scenario(parse_row({**LLAMA_B200, **changes}))
    c = build_perf_model(s.model, s.gpu, s.tp, s.dtype, s.perf).constants
    return c.ar_launch_s, c.eta_memory, c.step_overhead_s


def test_only_the_release_less_b200_rows_take_the_split():
    assert _constants() == (1.0e-06, 0.65, 0.00386)
    for changes in ({"backend_version": "0.19.0"}, {"system": "h100_sxm", "gemm_quant_mode": "fp8"},
                    {"system": "b300_sxm"}):
        assert _constants(**changes) != (1.0e-06, 0.65, 0.00386), changes


def _tpot_s(tp: int, overrides=None) -> float:
    row = parse_row({**LLAMA_B200, "tp_size": str(tp)})
    s = row_scenario(row, ClientOptions(), overrides=overrides)
    return client_metrics(simulate(s).requests, row_request_counts(row, ClientOptions()).measured_end)[1]


@pytest.mark.parametrize("tp", [1, 8])
def test_the_split_brings_the_4_user_decode_to_the_measured_tpot_on_tp_1_and_8(tp):
    # with the B200 vLLM (GPU, engine) constants TP 1 plays 17 % fast and TP 8 21 % slow: a 15 us all-reduce
    # launch where the engine's small all-reduce takes ~3 us, and too little time per step that no TP divides
    shipped = _tpot_s(tp)
    gpu_engine = _tpot_s(tp, {"ar_launch_s": 1.5e-05, "eta_memory": 0.765, "step_overhead_s": 0.002996})
    assert abs(shipped / MEASURED_TPOT_S[tp] - 1) < 0.05
    assert abs(gpu_engine / MEASURED_TPOT_S[tp] - 1) > 0.12
