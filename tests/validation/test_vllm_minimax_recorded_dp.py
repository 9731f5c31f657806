"""vLLM MiniMax-M2.5 FP8 rows on B200 / B300 / H100 recorded as attention DP X x TP X with the experts over X x X ranks are
InferenceMAX's `{ tp: X, ep: X }` runs: `minimaxm2.5_fp8_{b200,b300,h100}.sh` pass `--tensor-parallel-size=$TP`
`--enable-expert-parallel` and no data-parallel flag, so they play X GPUs, attention TP X, experts over X
(docs/fidelity-history.md, mmx21). Rows recorded otherwise, and the NVFP4 rows (whose scripts do run `dp-attn` configs as DP),
stay as recorded."""

from __future__ import annotations

import pytest

from servesim.validation.silicon import inexpressible_reason, parse_row, played_row, row_scenario, scenario_perf_model
from tests.validation.test_silicon_mapping import BASE

# `2026_04_06_..._c32_tp2_ep2_1384` and `_cfg690`: InferenceMAX's TP 2 x EP 2 config at 32 users, 16 a "rank"
RECORDED_DP = {**BASE, "tp_size": "2", "attention_dp_size": "2", "moe_tp_size": "1", "moe_ep_size": "4",
               "concurrency": "32", "batch_size": "16"}
# the 2026-03-25 export of the same config: TP 2 x EP 2
RECORDED_EP = {**BASE, "tp_size": "2", "attention_dp_size": "1", "moe_tp_size": "1", "moe_ep_size": "2",
               "concurrency": "32", "batch_size": "32"}


@pytest.mark.parametrize("system", ["b200_sxm", "b300_sxm", "h100_sxm"])
def test_recorded_dp_plays_as_the_scripts_tp_and_ep(system):
    played = played_row(parse_row({**RECORDED_DP, "system": system}))
    assert (played.tp, played.attention_dp, played.moe_tp, played.moe_ep) == (2, 1, 1, 2)
    assert played.concurrency == 32  # the client's users, not the per-rank batch
    dp = row_scenario(parse_row({**RECORDED_DP, "system": system}))
    ep = row_scenario(parse_row({**RECORDED_EP, "system": system}))
    assert dp == ep  # the same deployment as the export that records it as TP 2 x EP 2
    assert (dp.tp, dp.perf.data_parallel_size, dp.perf.expert_parallel, dp.perf.moe_a2a_backend) == (2, 1, True, "none")
    ctxs = [1100] * 32
    assert scenario_perf_model(dp).step_time_s([], ctxs) == scenario_perf_model(ep).step_time_s([], ctxs)


def test_the_16_gpu_records_are_one_4_gpu_replica():
    row = parse_row({**RECORDED_DP, "tp_size": "4", "attention_dp_size": "4", "moe_ep_size": "16", "batch_size": "4",
                     "concurrency": "16"})
    assert inexpressible_reason(row) is None
    played = played_row(row)
    assert (played.tp, played.attention_dp, played.moe_tp, played.moe_ep) == (4, 1, 1, 4)


@pytest.mark.parametrize("changes", [
    {"precision": "fp4", "gemm_quant_mode": "nvfp4", "moe_quant_mode": "nvfp4"},  # the NVFP4 scripts do run DP
    {"system": "h200_sxm"}, {"backend": "sglang"}, {"model_path": "moonshotai/Kimi-K2.5"},
    {"moe_ep_size": "2", "moe_tp_size": "2"},  # not the X x X record
])
def test_other_rows_keep_their_recorded_attention_dp(changes):
    row = parse_row({**RECORDED_DP, **changes})
    assert played_row(row).attention_dp == 2
