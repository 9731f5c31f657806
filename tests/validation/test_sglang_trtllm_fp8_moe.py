"""The SGLang B200 0.5.9 DeepSeek FP8 scripts' experts priced as FlashInfer's trtllm-gen FP8 block-scale MoE
(`inferencemax.TRTLLM_GEN_MOE`; docs/fidelity-history.md, sgr1mtp22)."""

from __future__ import annotations

from servesim.perf import build_perf_model
from servesim.validation.inferencemax import TRTLLM_GEN_MOE
from servesim.validation.run import simulate_row
from servesim.validation.silicon import ClientOptions, parse_row, row_scenario
from servesim.validation.silicon_file import read_rows
from tests.validation.test_sglang_inferencemax import DSR1_FP4, FP8_TP8
from tests.validation.silicon_rows import SILICON

FP8_TP4_8K = {**FP8_TP8, "tp_size": "4", "isl": "8192", "concurrency": "4", "batch_size": "4"}
FP8_MTP_8K = {**FP8_TP8, "isl": "8192", "concurrency": "64", "batch_size": "64"}  # outside the plain sweep
# AIConfigurator's B200 SGLang MoE table (moe/sglang/0.5.14, `sglang_flashinfer_trtllm_moe`, fp8_block, DeepSeek-V3's
# shape, balanced) at 8,192 tokens, and its FP8-block GEMM table (gemm/sglang/0.5.9) for the shared expert's gate-up
# and down: ms a layer, TP 8 / TP 4
TABLE_MOE_8K_MS = {8: 1.204 + 0.170, 4: 1.900 + 0.198}


def _model(row: dict, **kw):
    s = row_scenario(parse_row(row), ClientOptions(), **kw)
    return build_perf_model(s.model, s.gpu, s.tp, s.dtype, s.perf)


def test_the_fp8_script_rows_read_the_trtllm_gen_moe_and_no_other_row_does():
    fp8 = TRTLLM_GEN_MOE["fp8"]
    qwen = {**DSR1_FP4, "model_path": "Qwen/Qwen3.5-397B-A17B", "gemm_quant_mode": "fp8", "tp_size": "4",
            "moe_tp_size": "4", "moe_ep_size": "1"}  # qwen3.5_fp8_b200_mtp.sh's TP 4: the same runner flag (q35tp22)
    qwen_ep = {**qwen, "moe_tp_size": "1", "moe_ep_size": "4"}  # qwen3.5_fp8_b200.sh's TP 4 x EP 4 (sgb27)
    for row in (FP8_TP8, FP8_TP4_8K, FP8_MTP_8K, qwen, qwen_ep):  # the plain scripts at TP 8 and TP 4, the MTP scripts
        c = _model(row).constants
        assert (c.eta_moe_compute, c.moe_copy_bytes) == (fp8["eta_moe_compute"], fp8["moe_copy_bytes"]) == (0.18, 4.0)
    assert _model(FP8_MTP_8K).constants.overlap_cpu == 0.0  # with the MTP script's own constants
    for row in (DSR1_FP4,  # the NVFP4 script: its FP4 kernel keeps the release's price
                {**FP8_TP8, "system": "h200_sxm"},  # the H200 script: SGLang's own MoE
                {**FP8_TP8, "backend_version": ""}):  # the unversioned runs
        c = _model(row).constants
        assert (c.eta_moe_compute, c.moe_copy_bytes) == (0.0, 0.0)


def test_the_moe_layer_at_8k_tokens_costs_what_the_kernel_table_does():
    # main priced the layer as FLOPs at the release's GEMM efficiency: 0.42 / 0.83 ms, under 0.45x the table
    for tp, row in ((8, FP8_TP8), (4, FP8_TP4_8K)):
        terms = _model(row).terms
        layer_ms = 1e3 * terms.linear_s(8192, moe=True) / terms.model.num_moe_layers
        main_ms = 1e3 * _model(row, overrides={"eta_moe_compute": 0.0, "moe_copy_bytes": 0.0}).terms.linear_s(
            8192, moe=True) / terms.model.num_moe_layers
        assert abs(layer_ms / TABLE_MOE_8K_MS[tp] - 1) < 0.15  # (TP 8 0.95x, TP 4 1.11x)
        assert main_ms < 0.45 * TABLE_MOE_8K_MS[tp]
    # a decode's layer (64 tokens, weight-bound) moves by less than 5 %
    terms = _model(FP8_TP8).terms
    main = _model(FP8_TP8, overrides={"eta_moe_compute": 0.0, "moe_copy_bytes": 0.0}).terms
    assert abs(terms.linear_s(64, moe=True) / main.linear_s(64, moe=True) - 1) < 0.05


def test_the_tp4_8k_prompt_reaches_its_measured_first_token():
    # dsr1_b200_sglang_fp8_agg_8192x1024_c4_cfg271 (dsr1_fp8_b200.sh, TP 4, 4 users) measures 585.9 ms to the first
    # token; main played 489.9 ms (-16.4 %), its 8k prompt's experts at the release's GEMM efficiency. Both played
    # without the release's later flat price per prompt token and its lower front end (sgb27, which make this row
    # 17.6 % late: one of the DeepSeek 8k rows at 4 users that price costs; docs/fidelity-history.md), and with the front end's
    # serial 10 us a prompt token of the time (0 since sgadm29)
    row = next(r for r in read_rows(SILICON) if r.id == "dsr1_b200_sglang_fp8_agg_8192x1024_c4_cfg271")
    front_end = {"latency_s": 0.18, "prompt_token_s": 1.0e-05}
    before = {"overrides": {"prompt_token_gpu_s": 0.0}, "frontend": front_end}
    main = simulate_row(row, overrides={"eta_moe_compute": 0.0, "moe_copy_bytes": 0.0, "prompt_token_gpu_s": 0.0},
                        frontend=front_end)
    assert abs(simulate_row(row, **before).ttft_s / 0.5859 - 1) < 0.05 < 1 - main.ttft_s / 0.5859
