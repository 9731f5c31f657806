"""The disaggregated rows of the AIConfigurator silicon sample as servesim scenarios.

Each `mode=disagg` row of `silicon_calibration.csv` is one measured run: `prefill_num_workers`
workers of `prefill_tp_size` GPUs, `decode_num_workers` of `decode_tp_size`, a closed-loop
client keeping `concurrency` requests of `isl` input and `osl` output tokens in flight, and the
mean TTFT and TPOT it saw. `map_row` turns a row into `--set` overrides (prefill and decode
pools, fixed lengths, closed-loop users, the engine's profile), or says why the performance
model cannot express it yet (attention data parallelism, wide expert parallelism, FP4, a system
or model not in the catalogue). `simulate_row` runs it; the `validate` command and
`benchmarks/bench_silicon_disagg.py` call these. Choices: the first token comes from the
prefill worker (SGLang and TensorRT-LLM disaggregation do so); each worker's batch size is its
`max_num_seqs`; workers are packed 8 GPUs per node, so KV crosses InfiniBand NDR between nodes.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from servesim.validation.silicon_file import open_measured

SYSTEMS = {"h100_sxm": "h100-sxm", "h200_sxm": "h200", "b200_sxm": "b200"}
MODELS = {"deepseek-ai/DeepSeek-R1": "deepseek-v3", "deepseek-ai/DeepSeek-V3": "deepseek-v3",
          "meta-llama/Llama-3.1-8B": "llama-3.1-8b", "meta-llama/Llama-3.1-70B": "llama-3.1-70b"}
ENGINES = {"vllm": "vllm", "sglang": "sglang", "trtllm": "trtllm"}


@dataclass(frozen=True)
class RowMapping:
    """A row as scenario overrides, or the reason it cannot be simulated yet (one of the two)."""

    row_id: str
    overrides: list[str] | None
    reason: str | None = None


def load_disagg_rows(path: str | Path) -> list[dict]:
    """The `mode=disagg` rows of a silicon calibration CSV, in file order."""
    with open_measured(path) as f:  # (.csv.gz too: the shipped file)
        return [r for r in csv.DictReader(f) if r["mode"] == "disagg"]


def _int(row: dict, key: str, default: int = 1) -> int:
    v = row.get(key) or ""
    return int(float(v)) if v else default


def _unsupported(row: dict) -> str | None:
    if row["precision"] == "fp4" or "fp4" in (row.get("gemm_quant_mode") or ""):
        return "FP4 (NVFP4) weights: the performance model has no FP4 kernels yet"
    if row["system"] not in SYSTEMS:
        return f"system {row['system']} is not in the GPU catalogue (known: {', '.join(SYSTEMS)})"
    if row["model_path"] not in MODELS:
        return f"model {row['model_path']} is not in the catalogue"
    for side in ("prefill", "decode"):
        if _int(row, f"{side}_attention_dp_size") > 1:
            return f"{side} attention data parallelism ({row[f'{side}_attention_dp_size']}) is not modelled"
        if _int(row, f"{side}_moe_ep_size") > 1:
            return f"{side} wide expert parallelism (EP {row[f'{side}_moe_ep_size']}) is not modelled"
        if _int(row, f"{side}_pp_size") > 1:
            return f"{side} pipeline parallelism in a disaggregated pool is not wired yet"
    return None


MTP_MODELS = ("deepseek-v3",)  # models with multi-token-prediction modules (DeepSeek-V3/R1: one)


def map_row(row: dict, requests_per_user: int = 3, mtp_tokens: int = 0, mtp_acceptance_rate: float = 0.85) -> RowMapping:
    """Overrides that simulate the row (closed loop: `concurrency` users, each sending
    `requests_per_user` requests back to back), or why it cannot be simulated. Unset worker
    counts are 1; an unset batch size is the concurrency.

    The rows do not record whether MTP (multi-token prediction, DeepSeek's speculative
    decoding head) ran. `mtp_tokens` > 0 assumes it did on models that have it: the engine's
    speculative decoding with that many draft tokens, each accepted with
    `mtp_acceptance_rate` (DeepSeek-V3 report: 85-90% for the second token), drafted at the
    engine's default cost of an MTP head."""
    reason = _unsupported(row)
    if reason:
        return RowMapping(row["id"], None, reason)
    mtp = []
    if mtp_tokens and MODELS[row["model_path"]] in MTP_MODELS:
        mtp = [f"engine.num_speculative_tokens={mtp_tokens}", f"engine.spec_acceptance_rate={mtp_acceptance_rate}"]
    users = _int(row, "concurrency")
    pools = []
    for side in ("prefill", "decode"):
        seqs = max(1, _int(row, f"{side}_batch_size", users))  # unset: the client's concurrency
        pools.append(f"{{name: {side}, role: {side}, replicas: {_int(row, f'{side}_num_workers')}, "
                     f"tp: {_int(row, f'{side}_tp_size')}, engine: {{max_num_seqs: {seqs}}}}}")
    dtype = "fp8" if row["precision"] == "fp8" else "bf16"
    return RowMapping(row["id"], [
        f"model={MODELS[row['model_path']]}", f"gpu={SYSTEMS[row['system']]}", f"dtype={dtype}",
        f"perf.engine={ENGINES.get(row['backend'], 'vllm')}", "perf.expert_parallel=false",
        "workload.trace=null", "workload.arrival.process=closed", f"workload.arrival.users={users}",
        "workload.arrival.think_time_s=0", f"workload.num_requests={users * requests_per_user}",
        f"workload.lengths.prompt_tokens={_int(row, 'isl')}", f"workload.lengths.output_tokens={_int(row, 'osl')}",
        f"pools=[{', '.join(pools)}]", "router=least-requests", "disaggregation.decode_router=least-requests",
        "disaggregation.first_token=prefill", *mtp,
    ])


def simulate_row(mapping: RowMapping) -> tuple[float, float]:
    """(mean TTFT ms, mean TPOT ms) of the simulated row."""
    from servesim import load_scenario, simulate

    s = simulate(load_scenario(None, mapping.overrides)).summary()
    return s["ttft_s"]["mean"] * 1e3, s["tpot_s"]["mean"] * 1e3
