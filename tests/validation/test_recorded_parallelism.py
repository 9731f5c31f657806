"""Rows recorded with the engine's tp x ep product decode to the GPUs that ran them (exact)."""

from __future__ import annotations

import collections


from servesim.validation.recorded_parallelism import engine_parallelism, is_tp_times_ep
from servesim.validation.silicon import inexpressible_reason, parse_row, read_rows, row_scenario
from tests.validation.silicon_rows import SILICON

BASE = {
    "id": "r1", "backend": "sglang", "backend_version": "0.5.9", "model_path": "deepseek-ai/DeepSeek-V3",
    "system": "b200_sxm", "precision": "fp8", "mode": "agg", "isl": "1024", "osl": "1024", "gemm_quant_mode": "fp8",
    "moe_quant_mode": "fp8", "batch_size": "16", "tp_size": "64", "pp_size": "1", "attention_dp_size": "1",
    "moe_tp_size": "8", "moe_ep_size": "8", "silicon_ttft_ms": "300", "silicon_tpot_ms": "15", "concurrency": "16",
}


def row(**changes):
    return parse_row({**BASE, **changes})


def sizes(r):
    return (r.tp, r.attention_dp, r.moe_tp, r.moe_ep)


def test_tp_64_as_8_by_8_is_one_node_of_8_gpus_all_expert_parallel():
    r = row()
    assert is_tp_times_ep(r) and sizes(engine_parallelism(r)) == (8, 1, 1, 8)
    assert inexpressible_reason(r) is None
    s = row_scenario(r, calibration=None)
    assert (s.tp, s.perf.expert_parallel, s.perf.moe_tp_size, s.perf.moe_ep_size) == (8, True, None, None)


def test_other_products_and_attention_dp_column():
    assert sizes(engine_parallelism(row(tp_size="16", moe_tp_size="4", moe_ep_size="4"))) == (4, 1, 1, 4)
    assert sizes(engine_parallelism(row(tp_size="4", moe_tp_size="2", moe_ep_size="2"))) == (2, 1, 1, 2)
    # --tp 8 --ep 4 (TensorRT-LLM: each expert over 8 / 4 = 2 ranks)
    assert sizes(engine_parallelism(row(tp_size="32", moe_tp_size="8", moe_ep_size="4"))) == (8, 1, 2, 4)
    # attention DP recorded as the product: 8 attention ranks of one GPU on 8 GPUs, the experts
    # over all 8 (played by the attention-DP replica, perf/attention_dp.py)
    dp = row(tp_size="1", attention_dp_size="64")
    assert sizes(engine_parallelism(dp)) == (1, 8, 1, 8)
    assert inexpressible_reason(dp) is None
    s = row_scenario(dp, calibration=None)
    assert (s.tp, s.perf.data_parallel_size, s.perf.moe_ep_size) == (1, 8, 8)


def test_rows_in_aiconfigurator_terms_are_left_as_recorded():
    # attention_dp_size empty: TensorRT-LLM 1.3.0rc1's genuine MoE 2 x 4 grid on tp 8
    grid = row(backend="trtllm", tp_size="8", attention_dp_size="", moe_tp_size="2", moe_ep_size="4")
    assert not is_tp_times_ep(grid) and engine_parallelism(grid) is grid
    p = row_scenario(grid, calibration=None).perf
    assert (p.moe_tp_size, p.moe_ep_size) == (2, 4)
    for changes in ({"tp_size": "8", "moe_tp_size": "1"}, {"tp_size": "8", "moe_tp_size": "8", "moe_ep_size": "1"},
                    {"tp_size": "8"}):  # all-EP, all-TP, and 8 x 8 that does not multiply to the tp
        assert engine_parallelism(row(**changes)) == row(**changes)
    assert inexpressible_reason(row(tp_size="8")) == "MoE TP 8 x EP 8 does not cover tp 8"


def test_replica_size_reasons_follow_the_nvlink_domain():
    dense = {"model_path": "Qwen/Qwen3-32B", "moe_tp_size": "0", "moe_ep_size": "0",
             "attention_dp_size": ""}
    assert inexpressible_reason(row(tp_size="16", **dense)) == (
        "tp 16 spans several NVLink domains of 8 GPUs: multi-node replicas are not modelled")
    assert inexpressible_reason(row(tp_size="8", **dense)) is None
    wide = row(system="gb200", backend="trtllm", tp_size="36", moe_tp_size="36", moe_ep_size="1")
    assert inexpressible_reason(wide) == ("tp 36 within one 72-GPU NVLink domain: attention TP over more "
                                          "than 16 GPUs is not modelled (such runs use attention DP)")
    assert inexpressible_reason(row(system="gb200", tp_size="80", **dense)).startswith("tp 80 spans several NVLink domains of 72 GPUs")


def test_every_measurement_recorded_both_ways_decodes_to_its_twin():
    # The same run appears twice, every number identical, once as tp x ep and once in
    # AIConfigurator's terms: the decoded sizes must be the twin's.
    rows = [r for r in read_rows(SILICON) if r.mode == "agg"]
    key = lambda r: (r.backend, r.version, r.system, r.model, r.gemm_quant, r.isl, r.osl, r.concurrency, r.ttft_s, r.tpot_s)  # noqa: E731
    by_run = collections.defaultdict(list)
    for r in rows:
        by_run[key(r)].append(r)
    pairs = [(r, o) for r in rows if is_tp_times_ep(r) for o in by_run[key(r)] if not is_tp_times_ep(o)]
    assert len(pairs) == 57
    assert all(sizes(engine_parallelism(r)) == sizes(o) for r, o in pairs)
    assert sum(is_tp_times_ep(r) for r in rows) == 225
