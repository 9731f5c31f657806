"""The parallelism a silicon row's engine ran, decoded from how the measured file records it.

AIConfigurator's silicon sample records most runs in its own terms (tp_size x attention_dp_size
GPUs, their MoE split moe_tp_size x moe_ep_size over the same GPUs). One family of runs (the
DeepSeek-R1/V3 and Qwen3.5-397B runs with expert parallelism on B200, B300 and H200, ids named
`..._tp8_ep8_...`, `..._tp4_ep4_...` or `dsr1_..._cfgNNN`) is recorded with the engine's flags
`--tp X --ep Y` as tp_size = X * Y (or attention_dp_size = X * Y), moe_tp_size = X, moe_ep_size = Y:
the product, not the GPU count. The file shows it: 57 of these measurements appear twice with
every number identical to the last digit (engine, version, system, model, lengths, concurrency,
TTFT, TPOT), once as (tp 64, moe 8 x 8) and once as (tp 8, moe 1 x 8), (tp 16, moe 4 x 4) and
(tp 4, moe 1 x 4), or (attention DP 64, moe 8 x 8) and (attention DP 8, moe 1 x 8): one run of X
GPUs with its experts over Y of them (tests/validation/test_recorded_parallelism.py checks every
twin). So tp 64 on an 8-GPU HGX
system is one node of 8 GPUs, not 64 GPUs over InfiniBand.

The runs recorded in AIConfigurator's terms with a genuine moe_tp x moe_ep grid (TensorRT-LLM
1.3.0rc1: tp 8 as MoE 2 x 4, tp 4 as 2 x 2, ids naming `_tp8_`/`_tp4_`) leave attention_dp_size
empty; every product-recorded row fills it. That column is what tells the two apart.
"""

from __future__ import annotations

from dataclasses import replace

from servesim.validation.silicon_file import SiliconRow


def is_tp_times_ep(row: SiliconRow) -> bool:
    """True when the row's tp (or attention-DP) column is the engine's tp x ep product."""
    x, y = row.moe_tp, row.moe_ep
    if not row.attention_dp_recorded or x <= 1 or y <= 1 or x % y != 0:
        return False
    return x * y == row.tp * row.attention_dp and (row.tp == 1 or row.attention_dp == 1)


def engine_parallelism(row: SiliconRow) -> SiliconRow:
    """`row` with its parallelism as the engine ran it (unchanged unless is_tp_times_ep).

    `--tp X --ep Y`: X GPUs; attention TP X (or, recorded in the attention-DP column, X attention
    ranks); the experts over Y ranks, each expert's GEMMs split over X / Y (TensorRT-LLM's
    moe_tp_size = tp_size / moe_ep_size; SGLang's `--ep` likewise within the TP group).
    """
    if not is_tp_times_ep(row):
        return row
    gpus, ep = row.moe_tp, row.moe_ep
    if row.attention_dp > 1:
        return replace(row, tp=1, attention_dp=gpus, moe_tp=gpus // ep, moe_ep=ep)
    return replace(row, tp=gpus, moe_tp=gpus // ep, moe_ep=ep)
