"""Rows measured by InferenceMAX's benchmark scripts, played with their flags and client:
TensorRT-LLM's and SGLang's here (the TensorRT-LLM attention-DP and DeepSeek-R1 scripts in
`inferencemax_dsr1.py`), vLLM's in `inferencemax_vllm.py` (`recipe` picks for any row).

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
  flags from 2025-10-20 to 2026-05, its first month's version differing in KV precision and EP):
  `trtllm-serve --max_num_tokens 20000 --max_batch_size 512`,
  CUDA graphs padded to CONC, chunked context off, no batch waiting; the same client. It ran the
  gpt-oss-120b B200 rows of every release the file records for them (none, 1.2.0rc2, 1.2.0rc2.post2);
  played for the first two. 1.2.0rc2.post2 keeps the generator's flags until its release constants
  (front end, GPU time per layer, prefill), fitted on that play, are refitted with the script
  (docs/fidelity-history.md, "TensorRT-LLM on H100 and B200").

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
- the DeepSeek-R1 B200 rows that record release 1.2.0rc6.post2, with or without attention DP, play the
  revision of `dsr1_{fp4,fp8}_b200_trt.sh` that ran them (`dsr1_b200_trt`: budget at least 8,192
  tokens, FP8 batch waiting at 1k/1k from 64 users, FP8 KV cache); the rows that record 1.2.0rc6.post3
  play the MTP variants of those scripts that ran them (`dsr1_b200_trt_mtp`: MTP drafts, their budget).
- the DeepSeek-R1 B200 rows of release 1.1.0rc2.post2 are two campaigns on that image, the plain scripts of 2025-12
  and their MTP variants of 2026-01, told apart by the MTP configs' sweep (`dsr1_b200_trt_old`).
- the DeepSeek-R1 H200 rows: those without a release are `dsr1_fp8_h200_trt.sh` run on the
  1.1.0rc2.post2 image (`dsr1_h200_trt`, `as_run`), those recording 1.1.0rc2.post2 its MTP variant
  (played as the B200 MTP variants, `dsr1_b200_trt_mtp`: its drafts, budget and client).

Only the (engine, system, version, model) keys listed here play a recipe; a recipe is the
benchmark script that ran those rows, not a fitted constant. Everything else keeps the generator's
flags (silicon.engine_limits) and servesim's AIPerf client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from servesim.perf.calibration import CalibrationData, matched_values
from servesim.validation.inferencemax_dsr1 import (
    DSR1_RELEASE_SCRIPTS, GPTOSS_BUDGET_TOKENS, MTP_ACCEPTANCE, MTP_DRAFT_LAYERS, attention_dp_balance, attention_dp_recipe,
    dsr1_h200_trt, is_deepseek, is_dsr1_h200_plain)
from servesim.validation.inferencemax_vllm import vllm_recipe
from servesim.validation.script_sweeps import Recipe, every_shape, in_sweep
from servesim.validation.silicon_file import SiliconRow, exported_model

ROUNDS_PER_USER = 10  # --num-prompts CONC * 10
RANDOM_RANGE_RATIO = 0.8  # the workflows' default, unchanged from Sep 2025 to Apr 2026


def llama70b_h200_trt(row: SiliconRow) -> Recipe:
    """`70b_fp8_h200_trt_slurm.sh` as it ran until 2025-10-29."""
    scheduler = {}
    if row.isl == 1024 and row.osl == 1024 and row.tp < 8:
        scheduler = {"batch_wait_max_tokens_ratio": 0.9, "batch_wait_timeout_iters": 20}
    return Recipe(engine={"max_num_batched_tokens": 16384}, scheduler=scheduler)


def gptoss_b200_trt(row: SiliconRow) -> Recipe:
    """`gptoss_fp4_b200_trt_slurm.sh`: a 20,000-token budget (its batch cap, 512, is above every row's users), with
    DP_ATTENTION its `attention_dp_config` (`enable_balance: true` from 2025-12-02, when its config first swept
    attention DP), and the overlap scheduler: the script runs `trtllm-serve --backend=pytorch` and every image its
    config named (1.1.0rc2.post2 from 2025-09-19, then 1.2.0rc0.post1, 1.2.0rc2, 1.2.0rc2.post2) is a release from
    1.0 on, where that backend overlaps the CPU's step with the GPU's by default (engines.yaml). It matters for the
    rows that record no release, which would otherwise play the base profile's serial CPU (docs/fidelity-history.md, gpt23)."""
    return Recipe(engine={"max_num_batched_tokens": GPTOSS_BUDGET_TOKENS}, scheduler=attention_dp_balance(row),
                  constants={"overlap_cpu": 1.0})


# InferenceMAX's SGLang scripts (`benchmarks/single_node/<model>_<precision>_<gpu>.sh`) as they stood
# when their images were the release the rows record (InferenceX pull request 943, 2026-03-25: the
# DeepSeek-R1 B200 / H200 images to v0.5.9-cu130; the Qwen3.5 H200 config ran a v0.5.9 image; the
# flags unchanged from January to April), and the sweeps of
# `.github/configs/nvidia-master.yaml` at that commit: (engine TP, EP) -> users per shape. A row outside
# its script's sweep was not run by it (e.g. the DeepSeek-R1 B200 TP 8 rows at 128-512 users) and
# keeps the generator's deployment and AIPerf's client.
# None of the scripts sets --enable-mixed-chunk (prefill batches run alone, SGLang's default) and all
# pass --disable-radix-cache (no prefix cache is played anyway); --stream-interval 10 / 30 / 50 does not
# move TTFT or TPOT (the first token still goes out at once, `len(output_ids) % interval == 1`).
@dataclass(frozen=True)
class SGLangScript:
    running: int | None  # --max-running-requests (= --cuda-graph-max-bs or above)
    chunk: int | None  # --chunked-prefill-size (None: SGLang's default by GPU memory)
    prefill: int  # --max-prefill-tokens (SGLang's default 16,384 where unset)
    mem: float  # --mem-fraction-static
    sweep: dict  # (TP, EP) -> {(ISL, OSL): (fewest users, most users)}
    kv_fp8: bool = False  # --kv-cache-dtype fp8_e4m3 (matters for FP4 weights: auto would take 16 bits)
    recv: tuple[int, int] = (1, 1)  # --scheduler-recv-interval below 16 users, from 16 users
    running_1k1k: int | None = None  # a larger --max-running-requests for 1k/1k
    trtllm_kernels: bool = False  # --moe-runner-backend flashinfer_trtllm --attention-backend trtllm_mla
    drafts: int = 0  # --speculative-algorithm EAGLE --speculative-num-steps (top-k 1: that many draft tokens a step)
    acceptance: float = MTP_ACCEPTANCE  # each draft's acceptance (the model's MTP head on the script's client)


RECV_INTERVAL_USERS = 16  # the scripts' `CONC -ge 16` switch


# (system, version, model, GEMM precision[-TP]) -> script
SGLANG_SCRIPTS: dict[tuple[str, str, str, str], SGLangScript] = {
    # dsr1_fp8_b200.sh, per TP (TP 4 ran 8k/1k only, always receive interval 10), and dsr1_fp4_b200.sh
    ("b200_sxm", "0.5.9", "deepseek-r1", "fp8-8"): SGLangScript(
        128, 32768, 32768, 0.82, {(8, 1): {(1024, 1024): (4, 64), (1024, 8192): (4, 64), (8192, 1024): (4, 4)}},
        kv_fp8=True, recv=(10, 30), trtllm_kernels=True),
    ("b200_sxm", "0.5.9", "deepseek-r1", "fp8-4"): SGLangScript(
        32, 8192, 8192, 0.95, {(4, 1): {(8192, 1024): (4, 32)}}, kv_fp8=True, recv=(10, 10), trtllm_kernels=True),
    ("b200_sxm", "0.5.9", "deepseek-r1", "nvfp4"): SGLangScript(
        256, 16384, 16384, 0.85, {(4, 4): every_shape(4, 128), (8, 8): every_shape(4, 128)}, kv_fp8=True, recv=(10, 30),
        trtllm_kernels=True),
    # dsr1_fp8_h200.sh: 512 running requests at 1k/1k, 256 otherwise
    ("h200_sxm", "0.5.9", "deepseek-r1", "fp8"): SGLangScript(
        256, 32768, 32768, 0.82, {(8, 1): every_shape(4, 64)}, running_1k1k=512),
    # qwen3.5_fp8_h200.sh (its 16,384-token budget is SGLang's max_prefill_tokens default)
    ("h200_sxm", "0.5.9", "qwen3.5-397b-a17b", "fp8"): SGLangScript(
        128, 16384, 16384, 0.8, {(8, 8): every_shape(4, 64)}, kv_fp8=True),
    # qwen3.5_bf16_b200.sh as InferenceX pull request 758 left it (2026-02-19, unchanged in these flags to May 2026; image
    # nightly-dev-20260216-d3bae71e throughout): its sweep, TP 8 at 4-64 users for every shape (1k/8k until 2026-03-27),
    # is exactly the B200 nightly-dev rows (BF16, which the file records without a precision). The script's
    # --moe-runner-backend flashinfer_trtllm is not played as TensorRT-LLM's kernels (trtllm_kernels): whether that build
    # ran BF16 experts on trtllm-gen was not settled in the sources read (SGLang pull request 9384 sends a checkpoint
    # without a quantisation config back to FusedMoE; the BF16 trtllm-gen routed path is pull request 20214, 2026-03-09),
    # and the rows outside held_out_ids fit SGLang's own streaming, not TensorRT-LLM's (docs/fidelity-history.md, q35rel22).
    ("b200_sxm", "nightly-dev", "qwen3.5-397b-a17b", ""): SGLangScript(
        128, 32768, 32768, 0.82, {(8, 1): every_shape(4, 64)}, recv=(10, 30)),
    # qwen3.5_fp8_b200.sh at its two revisions before the rows' campaigns (2026-03-25, 2026-04-06): InferenceX
    # efd49e50b (2026-03-03, image v0.5.9-cu129) and 6a5dad463 (2026-03-23, v0.5.9-cu130), the flags the same in both
    # (128 running requests, 32,768-token chunk and budget, memory 0.82, FP8 KV, receive interval 10 / 30,
    # trtllm_mha attention and flashinfer_trtllm MoE, SGLANG_ENABLE_FLASHINFER_GEMM with JIT DeepGEMM off until
    # 515294190, 2026-04-30); the union of their sweeps, TP 8 at 4-16 users and TP 4 x EP 4 at 4-128, is exactly the
    # B200 0.5.9 Qwen3.5 rows outside the MTP variant's TP 4 grid (docs/fidelity-history.md, sgq35b, sgq35_24, sgfp8_26).
    ("b200_sxm", "0.5.9", "qwen3.5-397b-a17b", "fp8"): SGLangScript(
        128, 32768, 32768, 0.82, {(8, 1): every_shape(4, 16), (4, 4): every_shape(4, 128)}, kv_fp8=True, recv=(10, 30),
        trtllm_kernels=True),
    # The B300 0.5.10.post1 Qwen3.5 rows (`qwen3_5_b300_sglang_{bf16,fp8,fp4}_agg_*_cfg716..739`): InferenceX's B300 configs of
    # 2026-04-17 (image v0.5.10.post1-cu130 until the v0.5.12 updates of 2026-05-18..21, the flags unchanged in between),
    # whose sweeps are exactly the rows' grid. qwen3.5_fp8_b300.sh (c0f62a2ef, pull request 1048): TP 4 at 4-256 users,
    # running requests and CUDA-graph batch = CONC, 16,384-token chunk and budget, memory 0.8, FP8 KV, receive interval
    # 10 at every CONC, trtllm_mha / flashinfer_trtllm, --use-chat-template. qwen3.5_fp4_b300.sh (8acbd08b7, 1072): TP 4
    # and TP 2 x EP 2 at 4-128, 128 running requests, 32,768-token chunk and budget, memory 0.8, FP8 KV, receive interval
    # 10 / 30, flashinfer_trtllm MoE. qwen3.5_bf16_b300.sh (32274d6c1, 1081): TP 8 and TP 4 at 4-64, 128 running, 32,768,
    # memory 0.82, the checkpoint's 16-bit KV, receive interval 10 / 30, flashinfer_trtllm MoE. None sets
    # --enable-mixed-chunk (docs/fidelity-history.md, sgb3_29).
    ("b300_sxm", "0.5.10.post1", "qwen3.5-397b-a17b", "fp8"): SGLangScript(
        None, 16384, 16384, 0.8, {(4, 1): every_shape(4, 256)}, kv_fp8=True, recv=(10, 10), trtllm_kernels=True),
    ("b300_sxm", "0.5.10.post1", "qwen3.5-397b-a17b", "nvfp4"): SGLangScript(
        128, 32768, 32768, 0.8, {(4, 1): every_shape(4, 128), (2, 2): every_shape(4, 128)}, kv_fp8=True, recv=(10, 30),
        trtllm_kernels=True),
    ("b300_sxm", "0.5.10.post1", "qwen3.5-397b-a17b", ""): SGLangScript(
        128, 32768, 32768, 0.82, {(8, 1): every_shape(4, 64), (4, 1): every_shape(4, 64)}, recv=(10, 30),
        trtllm_kernels=True),
    # Not played (docs/fidelity-history.md, "SGLang rows run by InferenceMAX's scripts"): glm5_fp8_h200.sh (glm5-hopper;
    # held-out rows worse).
    # Nor (docs/fidelity-history.md, "The older InferenceMAX SGLang runs"), though they ran their rows: the B200
    # runs recorded without a version, dsr1_fp4_b200_docker.sh of Oct 2025 (image v0.5.3rc1, TP 4 / 8 at
    # 4-128, `--enable-ep-moe`: EP = TP) and dsr1_fp8_b200_docker.sh of 2025-11-10..18 (v0.5.5, TP 8 x
    # EP 8 at 4-64), whose client had no warm-up: each wave over the prefill budget measures a one-off
    # stall (~66 s / ~22 s over the ten rounds) no flag gives; and dsr1_fp8_b300.sh (B300 0.5.10.post1,
    # the B200 FP8 flags as they are), whose decodes take 2-4x the B200's at the same flags.
}
# dsr1_fp8_b200_mtp.sh (InferenceX pull request 626; config `dsr1-fp8-b200-sglang-mtp`, image v0.5.9-cu130 from pull
# request 943, 2026-03-25): TP 8 at 4-512 users for every shape, the plain FP8 script's kernels, KV precision and
# receive interval, 512 running requests, 16,384-token chunks and budget, EAGLE MTP with 2 steps, 3 draft tokens,
# top-k 1, and the client with --use-chat-template. It ran the B200 0.5.9 DeepSeek-R1 FP8 rows outside the plain
# sweep and, inside it, the run of each point that the plain config's export does not hold (`unexported_run`).
# Qwen3.5-397B-A17B's MTP head (one layer, `mtp_num_hidden_layers`) per draft on InferenceMAX's random-token prompts: no
# source measures it there. Published accept lengths of the same head at batch 1 on benchmark text (the
# AQ-MedAI/Qwen3.5-397B-A17B-eagle3 model card's MTP column: 2.34-3.66 tokens a step) give 0.65-0.92 a draft with 3
# drafts; the value was chosen on a grid (0.55-0.7) against TTFT + TPOT of the script's rows outside held_out_ids
# (docs/fidelity-history.md, q35tp22).
QWEN35_MTP_ACCEPTANCE = 0.6
SGLANG_MTP_SCRIPTS: dict[tuple[str, str, str, str], SGLangScript] = {
    ("b200_sxm", "0.5.9", "deepseek-r1", "fp8"): SGLangScript(
        512, 16384, 16384, 0.82, {(8, 1): every_shape(4, 512)}, kv_fp8=True, recv=(10, 30), trtllm_kernels=True,
        drafts=2),
    # qwen3.5_fp8_b200_mtp.sh (InferenceX pull request 898, merged 2026-03-20; config `qwen3.5-fp8-b200-sglang-mtp`, image
    # v0.5.9-cu130): TP 4 without EP at 4-256 users for every shape, exactly the grid of the B200 0.5.9 Qwen3.5 TP 4
    # rows (no plain config swept TP 4 without EP), 32,768-token chunks and budget, running requests = CONC, memory 0.8,
    # FP8 KV, trtllm_mha attention and flashinfer_trtllm MoE, EAGLE with 3 steps (4 draft tokens, top-k 1), no
    # SGLANG_ENABLE_SPEC_V2 at all (spec v1), the client with --use-chat-template.
    ("b200_sxm", "0.5.9", "qwen3.5-397b-a17b", "fp8"): SGLangScript(
        None, 32768, 32768, 0.8, {(4, 1): every_shape(4, 256)}, kv_fp8=True, recv=(10, 30), trtllm_kernels=True,
        drafts=3, acceptance=QWEN35_MTP_ACCEPTANCE),
}
# The B300 0.5.9 Qwen3.5 rows (2026_03_25 campaign) are not InferenceX CI runs (no B300 Qwen3.5 config before 2026-04-16),
# but their grid is exactly the B200 campaign's two configs, TP 4 at 4-256 users the MTP one's and TP 8 / TP 4 x EP 4 the
# plain one's, and their TP 4 decodes are drafted ones (0.83-0.94 of B200's MTP TPOT; docs/fidelity-history.md, q35b3_23): played
# with the B200 scripts' flags, client and drafts, the same image (docs/fidelity-history.md, sgb3_28).
B300_AS_B200_KEYS = (("b300_sxm", "0.5.9", "qwen3.5-397b-a17b", "fp8"), ("b200_sxm", "0.5.9", "qwen3.5-397b-a17b", "fp8"))
SGLANG_SCRIPTS[B300_AS_B200_KEYS[0]] = SGLANG_SCRIPTS[B300_AS_B200_KEYS[1]]
SGLANG_MTP_SCRIPTS[B300_AS_B200_KEYS[0]] = SGLANG_MTP_SCRIPTS[B300_AS_B200_KEYS[1]]
# The MTP script writes `SGLANG_ENABLE_SPEC_V2=1` as a plain shell assignment, never exported (unchanged to Aug 2026),
# so the server runs spec v1, for which SGLang's server_args (`_handle_speculative_decoding`, early-2026 sources)
# sets `disable_overlap_schedule` ("Overlap scheduler is disabled when spec v2 is off"): the scheduler's CPU work
# no longer hides behind the GPU step, it adds to it. That serial CPU time is the release's own (SGLang pull request
# 9588, which began the overlapped spec path, lists the v1 verify's host syncs: accept lengths, finish checks and page
# frees per request each step), so it is priced by the engine's CPU terms per step and per running request
# (`step_overhead_s`, `seq_overhead_s`), set here per (GPU, release) and read only with the overlap scheduler off: the
# release's plain rows keep the 9 ms `step_overhead_s` their overlapped step shows as a floor. Fitted on the MTP rows
# outside `held_out_ids` (docs/fidelity-history.md, sgmtp).
SPEC_V1_CPU: dict[tuple[str, str], dict[str, float]] = {
    ("b200_sxm", "0.5.9"): {"step_overhead_s": 2.0e-3, "seq_overhead_s": 1.5e-4},
}
SPEC_V1_CPU[("b300_sxm", "0.5.9")] = SPEC_V1_CPU[("b200_sxm", "0.5.9")]  # (the same release's loop, not refitted: sgb3_28)
# The FP8 scripts' experts (`--moe-runner-backend flashinfer_trtllm` on block-FP8 weights) run FlashInfer's trtllm-gen
# FP8 block-scale fused MoE, which costs more at prompt sizes than the FLOPs at the release's GEMM efficiency: in
# AIConfigurator's B200 SGLang MoE table (`systems/data/b200_sxm/moe/sglang/0.5.14/moe_perf.parquet`, kernel
# `sglang_flashinfer_trtllm_moe`, fp8_block, DeepSeek-V3's shape, balanced routing, collected through SGLang's FusedMoE
# with that runner; the 0.5.9 table has no trtllm-gen DeepSeek rows) a layer at 8,192 tokens takes 1.2 ms at TP 8 and
# 1.9 ms at TP 4, about 2.5x the price without these. Priced as TensorRT-LLM's own trtllm-gen runner is (the expanded
# rows written and read back in finalize, `moe_copy_bytes` 4, docs/fidelity-history.md "MoE at TP on TensorRT-LLM B200") and
# the grouped GEMMs at 0.18 of the FP8 peak: the value whose MoE block (with the shared expert, the table's GEMMs) is
# closest to the table at 2,048-16,384 tokens at TP 4 and TP 8 (mean absolute log error 0.11; read, not fitted on rows).
# The NVFP4 script's FP4 kernel is another one and keeps the release's price. docs/fidelity-history.md, sgr1mtp22. Read by
# runner flag: qwen3.5_fp8_b200_mtp.sh runs the same one, so its 63 rows take it too (read on DeepSeek's shape only;
# their TTFT / TPOT 22.3 / 10.8 -> 22.3 / 10.0 %, 8k/1k 46.6 / 16.7 -> 35.5 / 11.5 %; docs/fidelity-history.md, sgpf22).
TRTLLM_GEN_MOE: dict[str, dict[str, float]] = {"fp8": {"eta_moe_compute": 0.18, "moe_copy_bytes": 4.0}}
# SGLang 0.5.9 compiles FLA's l2norm kernel of every Gated DeltaNet layer once per new prompt token count (qwpf20;
# `gdn_compile_s`), so a script's random prompt lengths pay it on nearly every prefill step, while the generator's
# fixed lengths repeat their counts and compile only in the warm-up. H200 0.5.9, whose Qwen3.5 rows all play a script,
# holds the value in its release entry; on B200 0.5.9 only the script rows take it, at that release's 75 ms.
SCRIPT_GDN_COMPILE_S: dict[tuple[str, str], float] = {("b200_sxm", "0.5.9"): 0.075}


def sglang_script(row: SiliconRow) -> SGLangScript | None:
    """The InferenceMAX SGLang script that ran `row` (its engine parallelism decoded), or None."""
    # (the DeepSeek-R1 scripts' `dsr1_*` rows are recorded under DeepSeek-V3 too)
    key = (row.system, row.version, exported_model(row).split("/")[-1])
    script = SGLANG_SCRIPTS.get((*key, f"{row.gemm_quant}-{row.tp}")) or SGLANG_SCRIPTS.get((*key, row.gemm_quant))
    plain = script if script and in_sweep(script.sweep, row) else None
    mtp = SGLANG_MTP_SCRIPTS.get((*key, row.gemm_quant))
    if mtp and in_sweep(mtp.sweep, row) and (plain is None or row.unexported_run):
        return mtp
    return plain


# The plain scripts (no drafts; the radix cache off) run SGLang's overlap loop, `event_loop_overlap`, which launches a
# batch before it waits for the one before; the receive interval's skipper weighs the last launched batch, so the take a
# prompt step triggers runs as that step starts, and what arrives during it waits `scheduler_recv_interval` decode steps
# more (SGLangParams.overlap_loop_take). Played for B200 nightly-dev, better on both sides with its
# constants unchanged (sgadm28); B200 0.5.9's plain scripts (both DeepSeek-R1 ones and Qwen3.5's, receive interval 10 /
# 30) run the same loop and take so with the release's front end and NVFP4 prompt price refitted on the fit side
# (docs/fidelity-history.md, sgadm29). The MTP scripts run spec v1, SGLang's plain loop (sglang_recipe), and keep the take at a
# step's end. B300 0.5.10.post1's Qwen3.5 scripts run the same loop (no drafts, radix cache off); with its constants
# unchanged the take brings its 58 rows' first tokens 13.6 -> 10.9 %, better on both sides (docs/fidelity-history.md, sgb3_29).
# B300 0.5.9's TP 8 and TP 4 x EP 4 Qwen3.5 rows run B200 0.5.9's plain `qwen3.5_fp8_b200.sh` (B300_AS_B200_KEYS), the
# same loop and receive interval 10 / 30, so they take as B200 0.5.9's do; its TP 4 rows run the MTP script (spec v1) and
# keep the take at a step's end (docs/fidelity-history.md, sgb3t29).
OVERLAP_LOOP_TAKE = frozenset({("b200_sxm", "nightly-dev"), ("b200_sxm", "0.5.9"), ("b300_sxm", "0.5.10.post1"),
                               ("b300_sxm", "0.5.9")})


def sglang_recipe(row: SiliconRow) -> Recipe | None:
    """The scheduler, engine and KV settings of the SGLang script that ran `row`, or None."""
    script = sglang_script(row)
    if script is None:
        return None
    scheduler = {"max_prefill_tokens": script.prefill, "enable_mixed_chunk": False,
                 "scheduler_recv_interval": script.recv[row.concurrency >= RECV_INTERVAL_USERS]}
    engine: dict = {"gpu_memory_utilization": script.mem}
    running = script.running_1k1k if script.running_1k1k and (row.isl, row.osl) == (1024, 1024) else script.running
    if running:
        scheduler["max_running_requests"] = engine["max_num_seqs"] = running
    if script.chunk:
        scheduler["chunked_prefill_size"] = script.chunk
    constants = dict(TRTLLM_GEN_MOE.get(row.gemm_quant, {})) if script.trtllm_kernels else {}
    if script.drafts:  # the model's MTP module drafts each token (DeepSeek-R1's accepted as in TensorRT-LLM's MTP campaign)
        engine.update(num_speculative_tokens=script.drafts, spec_acceptance_rate=script.acceptance,
                      spec_draft_layers=MTP_DRAFT_LAYERS)
        constants.update(spec_v1_constants(row))
        # spec v1 runs SGLang's plain event loop, not `event_loop_overlap`: a prefill's first tokens leave at its end
        scheduler["consecutive_prefill_launch_share"] = 0.0
    elif (row.system, row.version) in OVERLAP_LOOP_TAKE:
        scheduler["overlap_loop_take"] = True
    if (row.system, row.version) in SCRIPT_GDN_COMPILE_S:  # read only by Gated DeltaNet models
        constants["gdn_compile_s"] = SCRIPT_GDN_COMPILE_S[(row.system, row.version)]
    return Recipe(engine=engine, scheduler=scheduler, perf={"kv_cache_dtype": "fp8"} if script.kv_fp8 else {},
                  kernels="trtllm" if script.trtllm_kernels else "", constants=constants)


def spec_v1_constants(row: SiliconRow) -> dict[str, float]:
    """The perf constants of an SGLang server running EAGLE on spec v1: no overlap scheduler, the release's serial
    CPU time per step."""
    return {"overlap_cpu": 0.0, **SPEC_V1_CPU[(row.system, row.version)]}


# The B200 DeepSeek-R1 scripts pass `--moe-runner-backend flashinfer_trtllm` and `--attention-backend
# trtllm_mla` (the FP8 one also SGLANG_ENABLE_FLASHINFER_GEMM=true): the expert GEMMs, the weights a decode
# step streams, run TensorRT-LLM's own trtllm-gen kernels, shipped in FlashInfer. So those rows stream the
# weights at the efficiency fitted for TensorRT-LLM on the same GPU, not at SGLang's (fitted on its default
# Triton MoE path and sitting at the fit grid's lowest multiplier, docs/fidelity-history.md). Only the weight
# streaming: the per-layer floor, the all-reduce launch and the CPU time per step stay SGLang's.
KERNEL_CONSTANTS = ("eta_memory",)
# A GPU with no entry of the kernel engine takes the one of the GPU whose entry it would be fitted like: B300 has no
# TensorRT-LLM rows, and its trtllm-gen kernels stream from the same 8 TB/s of HBM3e as B200's (the B300 0.5.10.post1
# SGLang entry holds the same 0.85 for its decodes; docs/fidelity-history.md, sgb3_28).
KERNEL_GPU_FALLBACK = {"b300": "b200"}


def kernel_constants(recipe: Recipe | None, gpu: str, calibration: CalibrationData | None) -> dict[str, float]:
    """The constants of `recipe`'s kernel engine on `gpu` in `calibration` (its (GPU, engine) entry, no
    release), for the perf overrides of a row whose script selects another engine's kernels; {} otherwise."""
    if recipe is None or not recipe.kernels or calibration is None:
        return {}
    values = matched_values(calibration, {"gpu": gpu, "engine": recipe.kernels, "version": ""})
    if not any(name in values for name in KERNEL_CONSTANTS) and gpu in KERNEL_GPU_FALLBACK:
        values = matched_values(calibration, {"gpu": KERNEL_GPU_FALLBACK[gpu], "engine": recipe.kernels, "version": ""})
    return {name: values[name] for name in KERNEL_CONSTANTS if name in values}


# (engine, system, version, model lower case) -> the script's recipe.
RECIPES: dict[tuple[str, str, str, str], Callable[[SiliconRow], Recipe]] = {
    ("trtllm", "h200_sxm", "", "meta-llama/llama-3.1-70b"): llama70b_h200_trt,
    **{("trtllm", "b200_sxm", version, "openai/gpt-oss-120b"): gptoss_b200_trt
       for version in ("", "1.2.0rc2")},
}


def recipe(row: SiliconRow) -> Recipe | None:
    """The InferenceMAX recipe that played `row`, or None (the generator's deployment)."""
    if row.backend == "sglang":
        return sglang_recipe(row)
    if row.backend == "vllm":
        return vllm_recipe(row)
    fn = RECIPES.get((row.backend, row.system, row.version, row.model.lower()))
    if fn is None and (row.backend, row.system, row.version) in DSR1_RELEASE_SCRIPTS and is_deepseek(row) and row.version_recorded:
        fn = DSR1_RELEASE_SCRIPTS[(row.backend, row.system, row.version)]
    if fn is None and is_dsr1_h200_plain(row):
        fn = dsr1_h200_trt
    return fn(row) if fn else attention_dp_recipe(row)


def client_lengths(row: SiliconRow) -> tuple[list[int], list[int]]:
    """benchmark_serving's random lengths: uniform over [int(ratio x len), len], inclusive."""
    return ([int(row.isl * RANDOM_RANGE_RATIO), row.isl], [int(row.osl * RANDOM_RANGE_RATIO), row.osl])
