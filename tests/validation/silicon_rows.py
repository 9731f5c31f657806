"""A measured silicon row for fit tests: one vLLM Llama-3.1-8B run on an H100, changed per test."""

from __future__ import annotations

from servesim.perf import build_perf_model
from servesim.validation.silicon import DEFAULT_SILICON, parse_row, row_scenario

SILICON = DEFAULT_SILICON  # the measured runs the package ships (`servesim validate`'s default)

BASE = {
    "id": "r", "backend": "vllm", "backend_version": "0.18.0", "model_path": "meta-llama/Llama-3.1-8B-Instruct",
    "system": "h100_sxm", "precision": "", "mode": "agg", "isl": "128", "osl": "8", "gemm_quant_mode": "",
    "moe_quant_mode": "", "batch_size": "2", "tp_size": "1", "pp_size": "1", "attention_dp_size": "1",
    "moe_tp_size": "0", "moe_ep_size": "0", "silicon_ttft_ms": "20", "silicon_tpot_ms": "10", "concurrency": "2",
}


def silicon_row(i: int, **changes: str):
    """Row `r{i}`: BASE with `changes` (CSV column -> text)."""
    return parse_row({**BASE, "id": f"r{i}", **changes})


# MiniMax-M2.5 FP8 on 4 B200s, 1k/1k at 4 users: the shape of the file's vLLM Blackwell rows
MINIMAX_B200 = {"backend": "vllm", "backend_version": "0.17.0", "model_path": "MiniMaxAI/MiniMax-M2.5",
                "system": "b200_sxm", "gemm_quant_mode": "fp8", "tp_size": "4", "moe_tp_size": "4", "moe_ep_size": "1",
                "isl": "1024", "osl": "1024", "concurrency": "4", "batch_size": "4"}


def minimax_perf_model(overrides=None, **changes: str):
    """The step-time model a MiniMax-M2.5 row (MINIMAX_B200 with `changes`) plays, shipped calibration and `overrides`."""
    s = row_scenario(silicon_row(0, **{**MINIMAX_B200, **changes}), overrides=overrides)
    return build_perf_model(s.model, s.gpu, s.tp, s.dtype, s.perf)
