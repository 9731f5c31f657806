"""vLLM rows measured by InferenceMAX's benchmark scripts, played with their `vllm serve` flags
and the scripts' client (`validation/inferencemax.py` describes the client; docs/fidelity-history.md, "vLLM
rows run by InferenceMAX's scripts" and the sections after it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from servesim.validation.script_sweeps import Recipe, every_shape, in_sweep, model_name
from servesim.validation.silicon_file import SiliconRow


# InferenceMAX's vLLM scripts (`benchmarks/single_node/<model>_<precision>_<gpu>.sh`) as they ran the rows. The silicon
# file's upstream `silicon_data_source` names InferenceMAX's exports and database dumps with their image
# (`image=vllm/vllm-openai:<tag>`) and date for almost every aggregated vLLM row (docs/fidelity-history.md, "vLLM rows run by
# InferenceMAX's scripts"). Each script's client is benchmark_serving (validation/inferencemax.py), with `--num-warmups 2 x CONC` drained
# before the measurement (so not played).
@dataclass(frozen=True)
class VLLMScript:
    budget_tokens: int  # --max-num-batched-tokens
    mem: float  # --gpu-memory-utilization
    block: int  # --block-size (vLLM's default 16 where unset)
    sweep: dict  # (TP, EP) -> {(ISL, OSL): (fewest users, most users)}, the union of the config's sweeps over the rows' dates
    kv_fp8: bool = True  # --kv-cache-dtype fp8
    budget_isl: int = 0  # --max-num-batched-tokens $((ISL * n)) where the script sets it so (then budget_tokens is 0)
    # --max-cudagraph-capture-size (or the largest --cuda-graph-sizes); 0: unset, vLLM's min(2 x max_num_seqs, 512);
    # -1: not played (a compilation config that graphs no prompt step at any size, FULL_DECODE_ONLY)
    capture_tokens: int = 0
    seqs_users: bool = False  # --max-num-seqs $CONC (else unset, vLLM's 1,024, or a constant above every row's users)
    # `async-scheduling: true` where the release's default is off (before 0.14.0): played as the releases that run it by
    # default are (engines.yaml's vLLM rule, overlap_cpu 1: the step is max(CPU, GPU)), the deployment's per-step time
    # on the GPU side of the step (calibration_serving.yaml, vllm_async and vllm_async_v0102)
    async_scheduling: bool = False


# vLLM's sequences per step where `vllm serve` leaves them unset (the API server on a GPU of 70 GiB or more,
# `engine/arg_utils.py`), and its largest default CUDA-graph size (`_set_cudagraph_sizes` in `config/vllm.py`:
# min(max_num_seqs x 2, 512), then at most the token budget; x (1 + draft tokens) with speculative decoding, which
# no script here runs). Above it the dispatcher runs a step with no graph (`CUDAGraphMode.NONE`,
# `v1/cudagraph_dispatcher.py`), whatever the mode (FULL_AND_PIECEWISE, the default, captures both kinds up to it).
VLLM_DEFAULT_MAX_NUM_SEQS = 1024
VLLM_DEFAULT_CAPTURE_CAP = 512


# The Llama-3.1-70B rows that record no vLLM version (H100 FP8 45, B200 NVFP4 60) are InferenceMAX runs measured
# 2025-10-29 with no image in the source column: InferenceX's `.github/workflows/70b-tmpl.yml` of that day (commit
# 9596d23, the last before pull request 149 removed Llama 70B the same evening) ran `nvidia/Llama-3.3-70B-Instruct-FP8`
# on H100 (TP 2 / 4 / 8) and `-FP4` on B200 (TP 1-8) with image `vllm/vllm-openai:v0.10.2`, `benchmark-tmpl.yml`'s
# users 4-64, every shape of the full-sweep schedulers at `random-range-ratio: 0.8`. `70b_fp8_h100_{docker,slurm}.sh`
# and `70b_fp4_b200_docker.sh` both serve with `max-num-batched-tokens: 8192`, `kv-cache-dtype: fp8`,
# `--gpu-memory-utilization 0.9`, `async-scheduling: true` (an opt-in flag in v0.10.2, which forces the multiprocess
# executor, whose `max_concurrent_batches` is then 2, so `EngineCore.step_with_batch_queue` schedules and launches the
# next step while the GPU runs this one; rejected only with pipeline parallelism or speculative decoding, neither of
# which the scripts use: played on H100, `async_scheduling`; not on B200, where the refit on the rows outside
# held_out_ids left the held-out first tokens worse; docs/fidelity-history.md, vl70_27), no `--block-size`; `--max-num-seqs`
# CONC (H100) or 512 (B200): at or above every row's users.
# B200 adds compilation fusions and `cudagraph_mode: FULL_DECODE_ONLY` (kernel settings, not flags servesim plays).
# The H100 gpt-oss-120b rows without a version inside that sweep (TP 8, 8k/1k, 32 / 64 users, measured 2025-11-02) ran
# `gptoss_fp4_h100_{docker,slurm}.sh` of `gptoss-tmpl.yml` (v0.10.2, TP 2 / 4 / 8): the same flags without a KV precision
# (vLLM's auto: 16 bits), `cuda-graph-sizes: 2048`. Its 512-user rows lie outside every sweep of those dates.
# Not the H200 ones (`gptoss_fp4_h200_slurm.sh`, the same flags): their first tokens come out 36-56 % fast (docs/fidelity-history.md).
LLAMA70_2025 = {(tp, 1): every_shape(4, 64) for tp in (1, 2, 4, 8)}

# The H100 / H200 vLLM 0.18.0 rows record `vllm/vllm-openai:v0.18.0`, measured 2026-03-27: InferenceX pull requests 960
# (`gptoss-fp4-h{100,200}-vllm`) and 958 (`minimaxm2.5-fp8-h100-vllm`) moved their configs to that image that day.
# `gptoss_fp4_h100.sh` and `gptoss_fp4_h200.sh` at that commit serve alike: `max-num-batched-tokens: 8192`,
# `no-enable-prefix-caching`, `--gpu-memory-utilization 0.9`, `--max-num-seqs $CONC` (the users, as the generator's
# batch), no KV precision or block size (BF16, 16), `VLLM_MXFP4_USE_MARLIN=1` (the experts run Marlin's weight-only
# MXFP4 kernel: its efficiency is the release's `eta_moe_compute` for int4, calibration_serving.yaml). Sweeps: TP 2 / 4
# / 8 at 4-64 users on every shape (8k/1k at TP 8 to 16 on H100, to 32 on H200), on H200 also TP 1 at 4 users (8k/1k
# to 64). `minimaxm2.5_fp8_h100.sh`: TP 4 x EP 4 (`--enable-expert-parallel`) at 4-64 users on every shape,
# `--gpu-memory-utilization 0.90`, `--max-num-seqs 256` (above every row's users), no `--max-num-batched-tokens`
# (`vllm serve`'s 8,192 on an 80 GB GPU: replica.config.serve_batch_defaults), no KV precision or block size.
# The B200 0.17.0 Kimi-K2.5 NVFP4 rows recorded at TP 4 EP 1 (`_cfg811`, db-dump, measured 2026-04-20) ran
# `kimik2.5_fp4_b200.sh` after InferenceX pull request 1047 (04-20, config `ep: 1`): `--gpu-memory-utilization 0.90
# --max-num-seqs CONC --kv-cache-dtype fp8 --max-cudagraph-capture-size 2048 --max-num-batched-tokens $((ISL * 2))
# --stream-interval 20`, no block size, prefix caching off, 1k/1k at 4-64 users and 8k/1k at 4-32. The release's
# earlier Kimi rows (the script without those four flags, 2026-03-11 to 04-06) record TP 4 EP 4 or TP 8 and stay
# outside this sweep (docs/fidelity-history.md, kimiv and vbw20).
# The B200 MiniMax-M2.5 NVFP4 rows of the build `nightly-5b8c30d62b754b57` are InferenceMAX's `wip` export of 2026-04-03:
# the branch of InferenceX pull request 996 at its commit 08bcde8f1 (2026-04-02, "Use vLLM nightly image ...", the config
# `minimaxm2.5-fp4-b200-vllm` on `vllm/vllm-openai:nightly-5b8c30d...`, TP 2 and TP 4, 1k/1k at 4-512 users and 8k/1k at
# 4-256; the next commit, 04-03 13:29, moved it to v0.19.0). `minimaxm2.5_fp4_b200.sh` there serves with
# `--gpu-memory-utilization 0.95 --block-size=32 --kv-cache-dtype fp8 --stream-interval 20 --no-enable-prefix-caching`
# and no `--max-num-batched-tokens`, `--max-cudagraph-capture-size` (both added on the branch by commit a9c199207 of
# 04-07, with memory 0.90 and no block size) or `--max-num-seqs`: `vllm serve`'s 8,192-token budget and 1,024 sequences,
# and CUDA graphs captured up to min(2 x 1,024, 512) = 512 tokens, so every step with a prompt (at least
# int(0.8 x 1,024) tokens) ran without graphs: the build's `eager_layer_s` (calibration_serving.yaml; docs/fidelity-history.md, vblw).
# The B200 0.17.0 Kimi-K2.5 NVFP4 rows measured before that revision (the 2026-03-25 / 04-06 exports and the gap-analysis
# copies of the same runs, 2026-03-11 to 04-06; recorded TP 4 EP 4, whose experts ran over TP: `experts_over_tp`, and
# TP 8) ran `kimik2.5_fp4_b200.sh` of InferenceX pull requests 862 / 926 / 911: `--gpu-memory-utilization 0.90
# --max-num-seqs CONC`, prefix caching off, no budget (vLLM's 8,192), block size, KV precision (auto) or capture size,
# so graphs only up to 2 x CONC tokens (8-128) and every prompt step without them (docs/fidelity-history.md, kimiv and
# kimi22). Its sweep here is the rows' points; the two TP 8 rows of 04-20 (`_cfg636`) record the same columns.
KIMI_B200_EARLY = VLLMScript(8192, 0.90, 16, {(4, 4): every_shape(4, 64), (8, 1): every_shape(4, 4)}, kv_fp8=False,
                             seqs_users=True)
# (system, version, model, GEMM precision) -> script, or scripts whose sweeps do not overlap (the first that ran the row)
VLLM_SCRIPTS: dict[tuple[str, str, str, str], VLLMScript | tuple[VLLMScript, ...]] = {
    ("h100_sxm", "", "llama-3.1-70b", "fp8"): VLLMScript(8192, 0.9, 16, {k: v for k, v in LLAMA70_2025.items() if k[0] > 1},
                                                       seqs_users=True, async_scheduling=True),
    ("b200_sxm", "", "llama-3.1-70b", "nvfp4"): VLLMScript(8192, 0.9, 16, LLAMA70_2025, capture_tokens=-1),
    ("h100_sxm", "", "gpt-oss-120b", "nvfp4"): VLLMScript(8192, 0.9, 16, {k: v for k, v in LLAMA70_2025.items() if k[0] > 1},
                                                        kv_fp8=False, capture_tokens=2048, seqs_users=True),
    ("h100_sxm", "0.18.0", "gpt-oss-120b", "nvfp4"): VLLMScript(8192, 0.90, 16, {
        (2, 1): every_shape(4, 64), (4, 1): every_shape(4, 64), (8, 1): every_shape(4, 64, 16)}, kv_fp8=False, seqs_users=True),
    ("h200_sxm", "0.18.0", "gpt-oss-120b", "nvfp4"): VLLMScript(8192, 0.90, 16, {
        (1, 1): every_shape(4, 4, 64), (2, 1): every_shape(4, 64), (4, 1): every_shape(4, 64), (8, 1): every_shape(4, 64, 32)},
        kv_fp8=False, seqs_users=True),
    ("h100_sxm", "0.18.0", "minimax-m2.5", "fp8"): VLLMScript(8192, 0.90, 16, {(4, 4): every_shape(4, 64)}, kv_fp8=False),
    ("b200_sxm", "0.17.0", "kimi-k2.5", "nvfp4"): (
        VLLMScript(0, 0.90, 16, {(4, 1): {(1024, 1024): (4, 64), (8192, 1024): (4, 32)}}, budget_isl=2, capture_tokens=2048,
                   seqs_users=True),
        KIMI_B200_EARLY),
    ("b200_sxm", "nightly-5b8c30d62b754b57", "minimax-m2.5", "nvfp4"): VLLMScript(8192, 0.95, 32, {
        (2, 1): {(1024, 1024): (4, 512), (8192, 1024): (4, 256)}, (4, 1): {(1024, 1024): (4, 512), (8192, 1024): (4, 256)}}),
}


# Rows recorded as vLLM runs of InferenceMAX that no InferenceMAX sweep ran, (system, model, users) -> why not played.
# H100 gpt-oss-120b at 512 users: 3 rows without a version (measured 2025-12-05) and 6 of 0.11.2 (2025-12-08), from
# the 2026-04-06 export. InferenceX's `nvidia-master.yaml` over those days (commits 93e1b3c to 0291997, either side of
# pull request 273 that moved the config to v0.11.2) sweeps `gptoss-fp4-h100-vllm` at 4-64 users only, and its
# `gptoss_fp4_h100_slurm.sh` serves with `--max-num-seqs $CONC`. The nine runs' means are no closed loop of 512 users:
# Little's law (users x decode time / E2E) gives 96-106 requests in service on TP 2, 4 and 8 and every shape alike
# (the KV room differs several-fold between them), with 20-460 s first-token waits, where the script's engine admits
# 512 sequences and its client (bench_serving) opens one connection per request; and six of them decode in a third
# to a half of the same TP and shape's 64-user TPOT, which about 100 running requests cannot. What capped them, and
# how many requests ran to their length, the file cannot tell (docs/fidelity-history.md, outl22).
OUTSIDE_SWEEP: dict[tuple[str, str, int], str] = {
    ("h100_sxm", "gpt-oss-120b", 512): ("vLLM H100 gpt-oss-120b at 512 users: outside every InferenceMAX sweep of its "
                                        "dates (4-64 users); its means hold about 100 requests in service, not 512"),
}


def outside_sweep_reason(row: SiliconRow) -> str | None:
    """Why a vLLM row that no InferenceMAX sweep ran cannot be played from its recorded deployment, or None."""
    if row.backend != "vllm":
        return None
    return OUTSIDE_SWEEP.get((row.system, model_name(row), row.concurrency))


# Kimi-K2.5 NVFP4 on B200 / B300: the file records the InferenceMAX config's `ep: 4` for the TP 4 rows of 0.17.0, but
# `kimik2.5_fp4_b200.sh` (2026-03-11 on) and `kimik2.5_fp4_b300.sh` pass no `--enable-expert-parallel` (nor read EP_SIZE),
# so vLLM split every expert over the TP group (docs/fidelity-history.md, kimiv and vbw20).
EXPERTS_OVER_TP_MODELS = frozenset({"kimi-k2.5"})


def experts_over_tp(row: SiliconRow) -> bool:
    """Whether `row` records an expert parallelism that its vLLM script did not pass (experts ran over TP)."""
    return (row.backend == "vllm" and row.system in ("b200_sxm", "b300_sxm") and row.moe_ep > 1
            and row.attention_dp <= 1 and model_name(row) in EXPERTS_OVER_TP_MODELS)


# MiniMax-M2.5 FP8 on B200 / B300 / H100: InferenceMAX's configs `{ tp: X, ep: X }` reach the file from its later
# exports and database dumps recorded as attention DP X x TP X with the experts over X x X ranks (the
# `2026_04_06_..._tp2_ep2_*` and `_cfg690` / `_cfg691` / `_cfg734` / `_cfg735` rows; H100 0.18.0's TP 4 x DP 4 rows);
# the 2026-03-25 export records the same configs as TP X x EP X, and its TP 2 x EP 2 TTFT means equal the
# DP-recorded ones within 6 % at 4-256 users (H100's TP 4 x EP 4 twins within 3 % below 8k prompts).
# `minimaxm2.5_fp8_b200.sh` (every revision, 2026-03-11 to 04-21), `minimaxm2.5_fp8_b300.sh` (04-17 and 04-21) and
# `minimaxm2.5_fp8_h100.sh` (every revision, 2026-03-01 to 07-05) serve with `--tensor-parallel-size=$TP` and
# `--enable-expert-parallel` when EP_SIZE > 1 and have no data-parallel flag, so those runs were X GPUs, attention
# TP X, experts over X (docs/fidelity-history.md, mmx21). The NVFP4 scripts do pass `--data-parallel-size=$TP` (with TP 1)
# for the configs marked `dp-attn`, which the recorded columns cannot tell from the plain `ep` ones: not decoded.
NO_DATA_PARALLEL_SCRIPTS = frozenset({("b200_sxm", "minimax-m2.5", "fp8"), ("b300_sxm", "minimax-m2.5", "fp8"),
                                      ("h100_sxm", "minimax-m2.5", "fp8")})


def without_recorded_dp(row: SiliconRow) -> SiliconRow:
    """`row` as its vLLM script ran it where the file records attention DP that the script never passed."""
    x = row.tp
    if (row.backend != "vllm" or (row.system, model_name(row), row.gemm_quant) not in NO_DATA_PARALLEL_SCRIPTS
            or row.attention_dp != x or x <= 1 or row.moe_tp > 1 or row.moe_ep != x * row.attention_dp):
        return row
    return replace(row, attention_dp=1, moe_tp=1, moe_ep=x)


def vllm_recipe(row: SiliconRow) -> Recipe | None:
    """The engine flags and KV precision of the vLLM script that ran `row`, or None."""
    scripts = VLLM_SCRIPTS.get((row.system, row.version, model_name(row), row.gemm_quant), ())
    script = next((s for s in (scripts if isinstance(scripts, tuple) else (scripts,)) if in_sweep(s.sweep, row)), None)
    if script is None:
        return None
    budget = script.budget_isl * row.isl or script.budget_tokens
    engine = {"max_num_batched_tokens": budget, "gpu_memory_utilization": script.mem, "block_size": script.block}
    seqs = VLLM_DEFAULT_MAX_NUM_SEQS
    if script.seqs_users:
        engine["max_num_seqs"] = seqs = row.concurrency
    perf = {"kv_cache_dtype": "fp8"} if script.kv_fp8 else {}
    if script.capture_tokens >= 0:  # the largest step vLLM runs from a graph (a release's graphless_layer_s reads it)
        perf["cudagraph_max_tokens"] = script.capture_tokens or min(2 * seqs, VLLM_DEFAULT_CAPTURE_CAP, budget)
    constants = {"overlap_cpu": 1.0} if script.async_scheduling else {}
    return Recipe(engine=engine, scheduler={}, perf=perf, constants=constants)
