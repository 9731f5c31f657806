"""TensorRT-LLM rows measured by InferenceMAX's benchmark scripts, played with their flags and client.

Most TensorRT-LLM H200 / B200 rows of the silicon sample were not measured with AIConfigurator's
generated deployments but, by every trace the upstream file keeps (`silicon_data_source`: image
names written `nvcr.io#nvidia/tensorrt-llm/release:<tag>` as InferenceMAX's SLURM launchers write
them, the shapes 1k/1k, 1k/8k, 8k/1k at 4-64+ users, the models Llama-3.x-70B, DeepSeek-R1 and
gpt-oss-120b, and the Llama-70B H200 runs dated 2025-10-29, the day InferenceMAX dropped that
model), by SemiAnalysis' InferenceMAX (github SemiAnalysisAI/InferenceX). Its scripts of that
time, sourced per model:

- the client is vLLM's `benchmark_serving.py` (`--dataset-name random --random-range-ratio 0.8
  --num-prompts CONC*10 --max-concurrency CONC --request-rate inf --ignore-eos`): ten requests
  per user, every prompt and output length drawn uniformly from [int(0.8 x len), len], all users
  started at once (no warm-up in the 2025 scripts; a drained warm-up plays the same);
- `benchmarks/70b_fp8_h200_trt_slurm.sh` (Sep-Oct 2025): `trtllm-serve --max_num_tokens 16384`,
  CUDA graphs to batch 1,024, chunked context off (the default), and for 1k/1k below TP 8
  TensorRT-LLM's batch waiting, `batch_wait_max_tokens_ratio: 0.9`, `batch_wait_timeout_iters:
  20` (new contexts held up to 20 iterations while requests decode, unless they fill 90 % of the
  token budget). That flag is why those runs' TTFT depends on the output length (1k/1k slower
  than 1k/8k at the same users): no fitted constant could give it.
- `benchmarks/gptoss_fp4_b200_trt_slurm.sh` (later `single_node/gptoss_fp4_b200_trt.sh`; the same
  flags from 2025-09-19 to 2026-05): `trtllm-serve --max_num_tokens 20000 --max_batch_size 512`,
  CUDA graphs padded to CONC, chunked context off, no batch waiting; the same client. It ran the
  gpt-oss-120b B200 rows of every release the file records for them (none, 1.2.0rc2, 1.2.0rc2.post2);
  played for the first two. 1.2.0rc2.post2 keeps the generator's flags until its release constants
  (front end, GPU time per layer, prefill), fitted on that play, are refitted with the script
  (docs/fidelity.md, "TensorRT-LLM on H100 and B200").

- the DeepSeek-R1 attention-DP runs (`benchmarks/dsr1_{fp4,fp8}_b200_trt*.sh`,
  `dsr1_fp8_h200_trt*.sh`, from Sep 2025) add `attention_dp_config: {batching_wait_iters: 0,
  enable_balance: true, timeout_iters: 60}`, and `gptoss_fp4_b200_trt.sh` (Dec 2025)
  `attention_dp_config: {enable_balance: true}` (TensorRT-LLM's defaults 50 / 10 for the rest):
  every TensorRT-LLM attention-DP row on H200 / B200 plays that balance
  (`attention_dp_balance`; replica/attention_dp_balance.py) with the scripts' client (ten
  requests per user, lengths over [0.8 x, x]: with fixed lengths the closed loop's users finish
  together and every rank has a context at once, so the balance never waits) and token budget per
  rank (`max_num_tokens`: DeepSeek-R1 concurrency + prompt + 64 rounded up to 64 tokens, at least
  8,192 from 2026-01-21, i.e. the 1.2.0rc6 images; gpt-oss 20,000; `attention_dp_recipe`).

Only the (engine, system, version, model) keys listed here play a recipe; a recipe is the
benchmark script that ran those rows, not a fitted constant. Everything else keeps the generator's
flags (silicon.engine_limits) and servesim's AIPerf client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from servesim.validation.silicon_file import SiliconRow

ROUNDS_PER_USER = 10  # --num-prompts CONC * 10
RANDOM_RANGE_RATIO = 0.8  # the workflows' default, unchanged from Sep 2025 to Apr 2026


@dataclass(frozen=True)
class Recipe:
    """What one benchmark script changes in a row's scenario."""

    engine: dict  # engine-section fields
    scheduler: dict  # scheduler-section fields
    perf: dict = field(default_factory=dict)  # perf-section fields (e.g. the KV cache's precision)


def llama70b_h200_trt(row: SiliconRow) -> Recipe:
    """`70b_fp8_h200_trt_slurm.sh` as it ran until 2025-10-29."""
    scheduler = {}
    if row.isl == 1024 and row.osl == 1024 and row.tp < 8:
        scheduler = {"batch_wait_max_tokens_ratio": 0.9, "batch_wait_timeout_iters": 20}
    return Recipe(engine={"max_num_batched_tokens": 16384}, scheduler=scheduler)


def gptoss_b200_trt(row: SiliconRow) -> Recipe:
    """`gptoss_fp4_b200_trt_slurm.sh`: a 20,000-token budget (its batch cap, 512, is above every row's users)."""
    return Recipe(engine={"max_num_batched_tokens": 20000}, scheduler={})


# `single_node/dsr1_{fp8,fp4}_b200.sh` (SGLang) as they stood when the B200 DeepSeek-R1 SGLang image
# became v0.5.9-cu130 (InferenceX pull request 943, 2026-03-25; the flags unchanged since January),
# keyed by GEMM precision and TP: (max_running_requests = cuda_graph_max_bs, chunked_prefill_size,
# max_prefill_tokens, mem_fraction_static), and the concurrencies its sweep ran per (ISL, OSL): FP8
# TP 8 1k/1k and 1k/8k at 4-64 users, 8k/1k at 4; FP8 TP 4 8k/1k at 4-32; FP4 (TP 4 x EP 4, TP 8 x
# EP 8) every shape at 4-128 (`.github/configs/nvidia-master.yaml`). Rows outside the sweep (the
# same release's TP 8 runs at 128-512 users) were not run by it and keep the generator's deployment.
# Both scripts add --kv-cache-dtype fp8_e4m3, --disable-radix-cache (no prefix cache is played
# anyway), --scheduler-recv-interval 30 from 16 users (10 below; FP8 TP 4 always 10) and
# --stream-interval 10 / 30, which does not move TTFT or TPOT (the first token still goes out at
# once: `len(output_ids) % interval == 1`, and the last with the finish).
DSR1_B200_SGLANG = {("fp8", 8): ((128, 32768, 32768, 0.82), {(1024, 1024): 64, (1024, 8192): 64, (8192, 1024): 4}),
                    ("fp8", 4): ((32, 8192, 8192, 0.95), {(8192, 1024): 32}),
                    ("nvfp4", 4): ((256, 16384, 16384, 0.85), {(1024, 1024): 128, (1024, 8192): 128, (8192, 1024): 128}),
                    ("nvfp4", 8): ((256, 16384, 16384, 0.85), {(1024, 1024): 128, (1024, 8192): 128, (8192, 1024): 128})}
DSR1_B200_RECV_INTERVAL_USERS, DSR1_B200_RECV_INTERVALS = 16, (10, 30)


def dsr1_b200_sglang(row: SiliconRow) -> Recipe | None:
    """InferenceMAX's SGLang DeepSeek-R1 B200 scripts, for a row their sweep ran (else None)."""
    entry = DSR1_B200_SGLANG.get((row.gemm_quant, row.tp))
    if entry is None or row.concurrency > entry[1].get((row.isl, row.osl), 0):
        return None
    (running, chunk, prefill, mem), _ = entry
    many = row.concurrency >= DSR1_B200_RECV_INTERVAL_USERS and (row.gemm_quant, row.tp) != ("fp8", 4)
    return Recipe(engine={"max_num_seqs": running, "gpu_memory_utilization": mem},
                  scheduler={"max_running_requests": running, "chunked_prefill_size": chunk,
                             "max_prefill_tokens": prefill, "scheduler_recv_interval": DSR1_B200_RECV_INTERVALS[many]},
                  perf={"kv_cache_dtype": "fp8"})


# (engine, system, version, model lower case) -> the script's recipe.
RECIPES: dict[tuple[str, str, str, str], Callable[[SiliconRow], Recipe | None]] = {
    ("trtllm", "h200_sxm", "", "meta-llama/llama-3.1-70b"): llama70b_h200_trt,
    **{("trtllm", "b200_sxm", version, "openai/gpt-oss-120b"): gptoss_b200_trt
       for version in ("", "1.2.0rc2")},
    **{("sglang", "b200_sxm", "0.5.9", model): dsr1_b200_sglang
       for model in ("deepseek-ai/deepseek-r1", "deepseek-ai/deepseek-v3")},
}


def recipe(row: SiliconRow) -> Recipe | None:
    """The InferenceMAX recipe that played `row`, or None (the generator's deployment)."""
    fn = RECIPES.get((row.backend, row.system, row.version, row.model.lower()))
    return fn(row) if fn else attention_dp_recipe(row)


def client_lengths(row: SiliconRow) -> tuple[list[int], list[int]]:
    """benchmark_serving's random lengths: uniform over [int(ratio x len), len], inclusive."""
    return ([int(row.isl * RANDOM_RANGE_RATIO), row.isl], [int(row.osl * RANDOM_RANGE_RATIO), row.osl])


# InferenceMAX's attention-DP runs (TensorRT-LLM rows on these systems): `attention_dp_config`
# per model family, as the scripts set it.
ATTENTION_DP_SYSTEMS = frozenset({"b200_sxm", "h200_sxm"})
ATTENTION_DP_BALANCE = {
    "deepseek": {"attention_dp_enable_balance": True, "attention_dp_timeout_iters": 60, "attention_dp_batching_wait_iters": 0},
    "gpt-oss": {"attention_dp_enable_balance": True},
}
# Token budget (`--max_num_tokens`, per attention rank): the DeepSeek-R1 scripts take concurrency
# + prompt + 64 rounded up to 64 tokens, at least 8,192 since 2026-01-21 (the TensorRT-LLM
# 1.2.0rc6 images came with the updates of 2026-01-29 / 02-03; 1.1.0rc2.post2 ran from Sep 2025);
# the gpt-oss script 20,000.
DSR1_BUDGET_FLOOR_TOKENS, DSR1_FLOOR_VERSIONS = 8192, frozenset({"1.2.0rc6.post2", "1.2.0rc6.post3"})
GPTOSS_BUDGET_TOKENS = 20000


def attention_dp_balance(row: SiliconRow) -> dict:
    """Scheduler fields of the InferenceMAX script's `attention_dp_config` for `row` (empty if none)."""
    if row.backend != "trtllm" or row.attention_dp <= 1 or row.system not in ATTENTION_DP_SYSTEMS:
        return {}
    name = row.model.lower().split("/")[-1]
    return next((dict(v) for k, v in ATTENTION_DP_BALANCE.items() if name.startswith(k)), {})


def attention_dp_recipe(row: SiliconRow) -> Recipe | None:
    """The InferenceMAX attention-DP deployment of `row` (its balance and token budget), or None."""
    balance = attention_dp_balance(row)
    if not balance:
        return None
    if row.model.lower().split("/")[-1].startswith("gpt-oss"):
        return Recipe(engine={"max_num_batched_tokens": GPTOSS_BUDGET_TOKENS}, scheduler=balance)
    budget = (row.concurrency + row.isl + 64 + 63) // 64 * 64
    if row.version in DSR1_FLOOR_VERSIONS:
        budget = max(budget, DSR1_BUDGET_FLOOR_TOKENS)
    return Recipe(engine={"max_num_batched_tokens": budget}, scheduler=balance)
