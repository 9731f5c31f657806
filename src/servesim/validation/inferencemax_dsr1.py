"""InferenceMAX's TensorRT-LLM attention-DP and DeepSeek-R1 scripts (the recipes `inferencemax.recipe` picks for
those rows; the scripts and their sources are listed in `inferencemax.py`'s docstring): the attention-DP balance and
token budget, the DeepSeek-R1 B200 scripts by release with their MTP variants, and the H200 plain and MTP campaigns."""

from __future__ import annotations

from dataclasses import replace

from servesim.validation.script_sweeps import Recipe, model_name
from servesim.validation.silicon_file import CONFIG_ID, SiliconRow


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
# the gpt-oss script 20,000. (1.2.0rc6.post3 ran the scripts' MTP variants, whose budget is (MTP + 1) x
# `--max_batch_size` + prompt + 64 with no floor: `dsr1_b200_trt_mtp` below.)
DSR1_BUDGET_FLOOR_TOKENS, DSR1_FLOOR_VERSIONS = 8192, frozenset({"1.2.0rc6.post2"})
GPTOSS_BUDGET_TOKENS = 20000


def attention_dp_balance(row: SiliconRow) -> dict:
    """Scheduler fields of the InferenceMAX script's `attention_dp_config` for `row` (empty if none)."""
    if row.backend != "trtllm" or row.attention_dp <= 1 or row.system not in ATTENTION_DP_SYSTEMS:
        return {}
    name = model_name(row)
    return next((dict(v) for k, v in ATTENTION_DP_BALANCE.items() if name.startswith(k)), {})


def attention_dp_recipe(row: SiliconRow) -> Recipe | None:
    """The InferenceMAX attention-DP deployment of `row` (its balance and token budget), or None."""
    balance = attention_dp_balance(row)
    if not balance:
        return None
    if model_name(row).startswith("gpt-oss"):
        return Recipe(engine={"max_num_batched_tokens": GPTOSS_BUDGET_TOKENS}, scheduler=balance)
    budget = dsr1_budget(row.concurrency, row.isl)
    if row.version in DSR1_FLOOR_VERSIONS:
        budget = max(budget, DSR1_BUDGET_FLOOR_TOKENS)
    return Recipe(engine={"max_num_batched_tokens": budget}, scheduler=balance)


def dsr1_budget(batch_tokens: int, prompt: int) -> int:
    """The DeepSeek-R1 scripts' `--max_num_tokens`: a batch's tokens + the prompt + 64, rounded up to 64."""
    return (batch_tokens + prompt + 64 + 63) // 64 * 64


# InferenceMAX's DeepSeek-R1 B200 TensorRT-LLM scripts of release 1.2.0rc6.post2: `dsr1_fp8_b200_trt.sh` (InferenceX
# pull request 594, 2026-01-29) and `dsr1_fp4_b200_trt.sh` (pull request 620, 2026-02-03), each run on the day its
# pull request moved the image to that release (the upstream file's `silicon_data_source` dates every row that
# records the release to one of those two days; the file keeps them as `dsr1_b200_trtllm_..._cfg<N>` and as
# InferenceMAX's exports alike). `--max_num_tokens` concurrency + prompt + 64 rounded up to 64, at least 8,192;
# FP8 1k/1k from 64 users batch waiting (`batch_wait_timeout_iters: 40`, `batch_wait_max_tokens_ratio: 0.8`; off
# with attention DP, as TensorRT-LLM turns it off); `kv_cache_config.dtype: fp8`; chunked context off; attention
# DP's `attention_dp_config` (above); benchmark_serving with ten requests per user over [0.8 x, x] lengths. (The
# MoE backend, the piecewise CUDA graphs and the KV memory fraction they also set are not modelled.) Rows whose
# release was recovered from their config or twins (`SiliconRow.version_recorded` False) were measured before
# those days (2025-11-02 or earlier, scripts without the 8,192 floor): they keep the generator's deployment.


def is_deepseek(row: SiliconRow) -> bool:
    return model_name(row).startswith("deepseek")


def dsr1_b200_trt(row: SiliconRow) -> Recipe:
    """The DeepSeek-R1 B200 script of `row`'s release (DSR1_RELEASE_SCRIPTS): budget, batch waiting, FP8 KV cache."""
    scheduler = attention_dp_balance(row)
    if row.gemm_quant == "fp8" and (row.isl, row.osl) == (1024, 1024) and row.concurrency >= 64 and not scheduler:
        scheduler = {"batch_wait_timeout_iters": 40, "batch_wait_max_tokens_ratio": 0.8}
    return dsr1_trt_recipe(row, scheduler)


# Their MTP variants, `dsr1_fp8_b200_trt_mtp.sh` (InferenceX pull request 632, 2026-02-05) and `dsr1_fp4_b200_trt_mtp.sh`
# (642, 2026-02-06), ran the rows recording 1.2.0rc6.post3, the image only they used (docs/fidelity-history.md): `speculative_config:
# {decoding_type: MTP, num_nextn_predict_layers: 3}`, 1 with attention DP; `--max_batch_size` the concurrency, per rank with
# attention DP (CONC / TP); `--max_num_tokens` (MTP + 1) x that + prompt + 64 rounded up to 64, no floor; no batch waiting;
# attention DP's `attention_dp_config` as above; FP8 KV cache; the same client with `--use-chat-template`, under which
# DeepSeek-R1's MTP accepts 2.50 tokens a step with 3 drafts (InferenceX pull request 649: 1 + a + a^2 + a^3 = 2.5 gives
# a = 0.628 a draft, taken for every draft). A generation request takes 1 + its drafts of the budget (trtllm scheduler).
MTP_DRAFTS, MTP_DRAFTS_ATTENTION_DP = 3, 1
MTP_ACCEPTANCE = 0.628
MTP_DRAFT_LAYERS = 1  # DeepSeek-R1's one MTP module, run once per draft token


# The 1.2.0rc6.post3 MTP scripts run TensorRT-LLM's piecewise CUDA graphs (`torch_compile_config:
# enable_piecewise_cuda_graph: true`, `capture_num_tokens` powers of two to 128, then every 256 up to the budget) at
# some shapes only: `dsr1_fp4_b200_trt_mtp.sh` (InferenceX pull request 642) at 1k/1k with 32 or 64 users (128 without
# attention DP) and at 1k/8k with 64, `dsr1_fp8_b200_trt_mtp.sh` (632) everywhere but with attention DP and at the
# narrow loads (1k/1k at 4 users or fewer, 1k/8k at 8, 8k/1k at 16). A step with prompt tokens runs outside the decode
# CUDA graphs; with the pieces captured it launches only what lies between them (the attention), so it pays less
# than the eager time per layer the release's NVFP4 entry prices every prompt step at (`eager_layer_s` 7e-04,
# calibration_serving.yaml mtp_eager, fitted on rows of both kinds). The FP8 entry has no eager price (its first
# tokens matched the plain release's), so only NVFP4 deployments take a price here. Per (GPU, release, precision),
# chosen on a grid (0, 3.5e-4, 5e-4) against TTFT + TPOT on the release's rows outside held_out_ids, held-out rows
# checked (docs/fidelity-history.md, issue 14, trtp3_26).
MTP_PIECEWISE_EAGER_LAYER_S = {("b200_sxm", "1.2.0rc6.post3", "nvfp4"): 5e-4}
MTP_FP8_EAGER_LOADS = {(1024, 1024): 4, (1024, 8192): 8, (8192, 1024): 16}  # most users without pieces (FP8)


def mtp_piecewise_cuda_graph(row: SiliconRow) -> bool:
    """Whether the 1.2.0rc6.post3 MTP script of `row`'s precision sets `enable_piecewise_cuda_graph` (above)."""
    if row.gemm_quant == "fp8":
        return row.attention_dp <= 1 and row.concurrency > MTP_FP8_EAGER_LOADS.get((row.isl, row.osl), 0)
    if (row.isl, row.osl) == (1024, 1024):
        return row.concurrency in (32, 64) or (row.concurrency == 128 and row.attention_dp <= 1)
    return (row.isl, row.osl) == (1024, 8192) and row.concurrency == 64


def dsr1_b200_trt_mtp(row: SiliconRow) -> Recipe:
    """The MTP variant of the DeepSeek-R1 scripts (B200 1.2.0rc6.post3 and 1.1.0rc2.post2, H200 1.1.0rc2.post2):
    drafts, their budget, FP8 KV cache, and the 1.2.0rc6.post3 scripts' piecewise CUDA graphs."""
    drafts = MTP_DRAFTS_ATTENTION_DP if row.attention_dp > 1 else MTP_DRAFTS
    batch = row.concurrency // max(1, row.attention_dp)
    engine = {"max_num_batched_tokens": dsr1_budget((drafts + 1) * batch, row.isl), "num_speculative_tokens": drafts,
              "spec_acceptance_rate": MTP_ACCEPTANCE, "spec_draft_layers": MTP_DRAFT_LAYERS}
    piecewise_s = MTP_PIECEWISE_EAGER_LAYER_S.get((row.system, row.version, row.gemm_quant))
    constants = {"eager_layer_s": piecewise_s} if piecewise_s is not None and mtp_piecewise_cuda_graph(row) else {}
    return Recipe(engine=engine, scheduler=attention_dp_balance(row), perf={"kv_cache_dtype": "fp8"},
                  constants=constants)


# Release 1.1.0rc2.post2 ran two DeepSeek-R1 B200 campaigns on one image (upstream `silicon_data_source` dates):
# the plain configs `dsr1-{fp8,fp4}-b200-trt` on 2025-12-15 (`dsr1_{fp8,fp4}_b200_trt_slurm.sh`: `--max_num_tokens`
# concurrency + prompt + 64 rounded up to 64, no floor yet; FP8 KV cache; no `--max_batch_size`) and their MTP variants
# `dsr1-{fp8,fp4}-b200-trt-mtp` on 2026-01-14 (InferenceX pull request 392, 2026-01-15 `..._trt_mtp_slurm.sh`: the
# flags `dsr1_b200_trt_mtp` plays). The file does not date its rows; the MTP configs' search spaces do (below): a
# row of InferenceMAX's export (`2026_..._tp<X>_ep<Y>_<n>`) whose point the MTP config swept is an MTP run, every other
# row (the plain configs' own points, and AIConfigurator's config 177, `dsr1_b200_trtllm_fp8_..._cfg177`, dated
# 2025-12-15, a month before the MTP config existed) a plain one. Every such row checked against its upstream date.
DSR1_B200_OLD_RELEASE = "1.1.0rc2.post2"
# (quantisation, GPUs, EP, attention DP) -> {(ISL, OSL): (fewest, most users)} of `dsr1-{fp8,fp4}-b200-trt-mtp`
# in `.github/configs/nvidia-master.yaml` of pull request 392 (ADP: `dp-attn: true`; EP 1 where no `ep` is given).
DSR1_B200_MTP_SWEEP = {
    ("fp8", 8, 8, False): {(1024, 1024): (4, 32), (1024, 8192): (4, 64), (8192, 1024): (4, 32)},
    ("fp8", 8, 8, True): {(1024, 1024): (64, 256), (1024, 8192): (128, 256), (8192, 1024): (64, 256)},
    ("nvfp4", 4, 1, False): {(1024, 1024): (4, 8), (1024, 8192): (4, 16), (8192, 1024): (4, 16)},
    ("nvfp4", 4, 4, False): {(1024, 1024): (16, 64), (1024, 8192): (32, 64)},
    ("nvfp4", 4, 4, True): {(1024, 1024): (128, 256), (1024, 8192): (128, 256), (8192, 1024): (32, 256)},
    ("nvfp4", 8, 1, False): {(1024, 1024): (4, 8), (1024, 8192): (4, 4), (8192, 1024): (4, 16)},
    ("nvfp4", 8, 8, False): {(1024, 1024): (16, 32), (1024, 8192): (8, 64)},
    ("nvfp4", 8, 8, True): {(1024, 1024): (64, 256), (1024, 8192): (128, 256), (8192, 1024): (32, 256)},
}


def is_dsr1_b200_mtp_run(row: SiliconRow) -> bool:
    """Whether a DeepSeek-R1 B200 row of release 1.1.0rc2.post2 (parallelism decoded) was an MTP run (above)."""
    key = (row.gemm_quant, row.tp * row.attention_dp, row.moe_ep, row.attention_dp > 1)
    users = DSR1_B200_MTP_SWEEP.get(key, {}).get((row.isl, row.osl))
    return not CONFIG_ID.search(row.id) and bool(users) and users[0] <= row.concurrency <= users[1]


def dsr1_b200_trt_old(row: SiliconRow) -> Recipe:
    """Release 1.1.0rc2.post2's DeepSeek-R1 B200 scripts: the MTP variant for the MTP runs, else the plain
    script of 2025-12 (budget without the floor, FP8 KV cache, attention DP's balance)."""
    if is_dsr1_b200_mtp_run(row):
        return dsr1_b200_trt_mtp(row)
    return Recipe(engine={"max_num_batched_tokens": dsr1_budget(row.concurrency, row.isl)},
                  scheduler=attention_dp_balance(row), perf={"kv_cache_dtype": "fp8"})


def dsr1_trt_recipe(row: SiliconRow, scheduler: dict) -> Recipe:
    """What the DeepSeek-R1 TensorRT-LLM scripts share: the budget with the 8,192-token floor, FP8 KV cache."""
    budget = max(dsr1_budget(row.concurrency, row.isl), DSR1_BUDGET_FLOOR_TOKENS)
    return Recipe(engine={"max_num_batched_tokens": budget}, scheduler=scheduler, perf={"kv_cache_dtype": "fp8"})


# InferenceMAX's plain DeepSeek-R1 H200 TensorRT-LLM runs (config `dsr1-fp8-h200-trt`, script
# `dsr1_fp8_h200_trt[_slurm].sh`): every revision of the config from Sep 2025 to Apr 2026 runs the image
# `release:1.1.0rc2.post2` with EP = TP (`EP_SIZE="$TP"` in the 2025 scripts, `{ tp: 8, ep: 8 }` in every
# search space after), the CUTLASS MoE backend, CUDA graphs padded to 128, `kv_cache_config.dtype: fp8`, and
# `--max_num_tokens` concurrency + prompt + 64 rounded up to 64, at least 8,192 from 2026-01-21 (InferenceX
# pull request 258). The file keeps them without a release and as EP 1 (`2026_04_06_deepseek_r1_h200_sxm_
# trtllm_fp8_agg_..._tp8_ep1_<n>`: InferenceMAX's export names the EP it was not given). The rows that record
# 1.1.0rc2.post2 are the same image's MTP variant (`dsr1-fp8-h200-trt-mtp`, pull request 392, 2026-01-15: its
# search space is exactly theirs, attention DP at 128-256 users included; played as the B200 MTP scripts, below).
# The plain rows play the plain script as the release it ran (docs/fidelity-history.md, "TensorRT-LLM H200
# DeepSeek-R1: the plain and the MTP campaign").
DSR1_H200_RELEASE = "1.1.0rc2.post2"


def is_dsr1_h200_plain(row: SiliconRow) -> bool:
    """A row of InferenceMAX's plain DeepSeek-R1 H200 runs: TensorRT-LLM H200 DeepSeek, no release recorded
    (`as_run` gives it the config's image as an unrecorded release)."""
    return (row.backend == "trtllm" and row.system == "h200_sxm" and is_deepseek(row)
            and (not row.version or (row.version == DSR1_H200_RELEASE and not row.version_recorded)))


def as_run(row: SiliconRow) -> SiliconRow:
    """`row` with the release and expert parallelism its benchmark script ran (the plain DeepSeek-R1 H200
    runs: the image's release, EP = TP); every other row unchanged."""
    if not is_dsr1_h200_plain(row) or row.version:
        return row
    return replace(row, version=DSR1_H200_RELEASE, version_recorded=False, moe_tp=1, moe_ep=row.tp)


def dsr1_h200_trt(row: SiliconRow) -> Recipe:
    """`dsr1_fp8_h200_trt.sh`: the DeepSeek-R1 scripts' budget with the 8,192-token floor, FP8 KV cache."""
    return dsr1_trt_recipe(row, {})


# The rows that record 1.1.0rc2.post2 ran the MTP variant, `dsr1_fp8_h200_trt_mtp.sh` (InferenceX pull request 392,
# 2026-01-15; its flags unchanged to April 2026): the plain script's image, CUTLASS MoE, CUDA graphs and FP8 KV cache,
# plus `speculative_config: {decoding_type: MTP, num_nextn_predict_layers: 3}` (1 with attention DP), `--max_batch_size`
# the concurrency (per rank with attention DP), `--max_num_tokens` (MTP + 1) x that + prompt + 64 rounded up to 64 with
# no floor, and the same client with `--use-chat-template`: the flags of the B200 MTP scripts, played as those are
# (`dsr1_b200_trt_mtp`: drafts at the B200 campaigns' acceptance, the same model and MTP module). The release's decode
# floor (`layer_floor_s`, calibration_serving.yaml) was fitted with the drafts played (docs/fidelity-history.md, trth200r1 and
# trth200b).


# (engine, system, release) -> the DeepSeek-R1 script that ran the rows recording that release
DSR1_RELEASE_SCRIPTS = {("trtllm", "b200_sxm", "1.2.0rc6.post2"): dsr1_b200_trt,
                        ("trtllm", "b200_sxm", "1.2.0rc6.post3"): dsr1_b200_trt_mtp,
                        ("trtllm", "b200_sxm", DSR1_B200_OLD_RELEASE): dsr1_b200_trt_old,
                        ("trtllm", "h200_sxm", DSR1_H200_RELEASE): dsr1_b200_trt_mtp}
