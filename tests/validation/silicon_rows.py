"""A measured silicon row for fit tests: one vLLM Llama-3.1-8B run on an H100, changed per test."""

from __future__ import annotations

from servesim.validation.silicon import parse_row

BASE = {
    "id": "r", "backend": "vllm", "backend_version": "0.18.0", "model_path": "meta-llama/Llama-3.1-8B-Instruct",
    "system": "h100_sxm", "precision": "", "mode": "agg", "isl": "128", "osl": "8", "gemm_quant_mode": "",
    "moe_quant_mode": "", "batch_size": "2", "tp_size": "1", "pp_size": "1", "attention_dp_size": "1",
    "moe_tp_size": "0", "moe_ep_size": "0", "silicon_ttft_ms": "20", "silicon_tpot_ms": "10", "concurrency": "2",
}


def silicon_row(i: int, **changes: str):
    """Row `r{i}`: BASE with `changes` (CSV column -> text)."""
    return parse_row({**BASE, "id": f"r{i}", **changes})
