"""How each row of the AIConfigurator silicon sample maps to a servesim scenario (the file's
schema and reader: silicon_file.py).

Each aggregated row is one replica (tp / attention-dp / MoE TP x EP as the engine ran them:
recorded_parallelism.py decodes the rows recorded as the engine's tp x ep product) serving a
closed-loop client that keeps `concurrency` requests of fixed `isl` / `osl` tokens in flight
(one worker's share of them where the file records a cluster's concurrency: gap_analysis.py);
the measured results are mean TTFT and TPOT. `row_scenario` returns the scenario that plays the
row, or the reason it cannot be expressed yet. The mapping is explicit and tested row by row.
"""

from __future__ import annotations

from importlib import resources
from typing import Mapping

from servesim.errors import InputError
from servesim.perf import PerfModel, build_perf_model
from servesim.perf.calibration import CalibrationData, load_calibration, shipped_calibration
from servesim.perf.engines import engine_profile
from servesim.perf.hardware import gpu_spec
from servesim.replica.frontend import profile_name
from servesim.perf.models import check_tp, model_spec
from servesim.scenario import Scenario, validate_scenario
from servesim.validation import inferencemax
from servesim.validation.client import ClientOptions, RequestCounts, request_counts  # noqa: F401 (re-exported)
# The measured file's schema and reader, re-exported here where callers have always found them.
from servesim.validation.silicon_file import DEFAULT_SILICON, REQUIRED, SiliconRow, parse_row, read_rows  # noqa: F401
from servesim.validation.recorded_parallelism import engine_parallelism
from servesim.validation.gap_analysis import campaign_reason, worker_share
from servesim.validation.inferencemax_dsr1 import as_run
from servesim.validation.inferencemax_vllm import experts_over_tp, outside_sweep_reason, without_recorded_dp

SERVING_CALIBRATION = "calibration_serving.yaml"
GPUS = {"h100_sxm": "h100-sxm", "h200_sxm": "h200", "b200_sxm": "b200", "b300_sxm": "b300", "gb200": "gb200"}
# GEMM quantisation as the file names it -> servesim dtype. NVFP4 needs FP4 tensor cores; on Hopper
# the same checkpoints (gpt-oss MXFP4) run weight-only, dequantised into BF16 GEMMs (servesim int4).
DTYPES = {"": "bf16", "bf16": "bf16", "fp8": "fp8", "fp8_block": "fp8", "nvfp4": "fp4", "int4_wo": "int4"}
# The scheduler that plays each engine (each engine's own policy, replica/schedulers/<name>.py).
SCHEDULERS = {"vllm": "vllm", "sglang": "sglang", "trtllm": "trtllm"}
UNSUPPORTED_MODELS: dict[str, str] = {}  # model path (lower case) -> why it cannot be played


def played_row(row: SiliconRow) -> SiliconRow:
    """`row` as its engine ran it: the parallelism decoded from the recorded columns, then the release and
    expert parallelism of the benchmark script that ran it where the file omits them (inferencemax_dsr1.as_run), without
    the attention DP that a vLLM script never passed (inferencemax_vllm.without_recorded_dp), then one worker's users
    where the concurrency is a whole cluster's (gap_analysis.worker_share)."""
    return worker_share(without_recorded_dp(as_run(engine_parallelism(row))))


def inexpressible_reason(row: SiliconRow) -> str | None:
    """Why `row` cannot be simulated yet, or None when it can."""
    row = played_row(row)
    if row.mode != "agg":
        return "disaggregated: played separately by benchmarks/bench_silicon_disagg.py (docs/disaggregation.md)"
    if (reason := campaign_reason(row)) is not None or (reason := outside_sweep_reason(row)) is not None:
        return reason
    if row.concurrency <= 0:
        return "the client concurrency is not recorded"
    if row.system not in GPUS:
        return f"GPU {row.system} is not in the catalogue"
    if (why := UNSUPPORTED_MODELS.get(row.model.lower())) is not None:
        return why
    if row.gemm_quant not in DTYPES:
        return f"quantisation {row.gemm_quant!r} is not modelled (known: {', '.join(k or 'bf16' for k in DTYPES)})"
    if row.pp != 1:
        return "pipeline parallelism in the measured file is not mapped"
    if row.attention_dp > 1 and (reason := attention_dp_reason(row)):
        return reason
    if SCHEDULERS.get(row.backend) is None:
        return f"engine {row.backend!r} has no servesim profile"
    if (reason := replica_size_reason(row)) is not None:
        return reason
    try:
        spec = model_spec(row.model)
        check_tp(spec, row.tp)
    except InputError as exc:
        return str(exc)
    if spec.moe is not None and row.moe_tp * row.moe_ep != row.tp * row.attention_dp:
        dp = f" x attention DP {row.attention_dp}" if row.attention_dp > 1 else ""
        return f"MoE TP {row.moe_tp} x EP {row.moe_ep} does not cover tp {row.tp}{dp}"
    return None


# GPUs per scale-up (NVLink) domain of the systems whose attention-DP rows are mapped: HGX boards of 8.
ATTENTION_DP_NODE_GPUS = 8


def attention_dp_reason(row: SiliconRow) -> str | None:
    """Why an attention-DP row cannot be played yet, or None. The replica spans tp x attention_dp
    GPUs (tp per attention rank, the experts over all of them); beyond one 8-GPU node the MoE
    exchange crosses the scale-out network, which the catalogue does not describe."""
    gpus = row.tp * row.attention_dp
    if gpus > ATTENTION_DP_NODE_GPUS:
        return f"attention DP over {gpus} GPUs (tp {row.tp} x dp {row.attention_dp}) spans several nodes: multi-node replicas are not modelled"
    return None


# The largest attention TP servesim's models accept (perf.models.check_tp). The measured rows above
# it (TensorRT-LLM DeepSeek-R1 on 20-64 GB200 GPUs) ran attention DP with wide EP (docs/fidelity-history.md,
# "Replicas of more than 8 GPUs").
MAX_ATTENTION_TP = 16


def replica_size_reason(row: SiliconRow) -> str | None:
    """Why a replica of `row.tp` GPUs cannot be played: more GPUs than one NVLink domain of the
    system holds (8 on HGX boards, 72 in a GB200 NVL72 rack; scale-out collectives are not
    modelled), or an attention TP above MAX_ATTENTION_TP; None when it fits."""
    domain = gpu_spec(GPUS[row.system]).scaleup_domain_gpus
    if row.tp > domain:
        return f"tp {row.tp} spans several NVLink domains of {domain} GPUs: multi-node replicas are not modelled"
    if row.tp > MAX_ATTENTION_TP:
        return (f"tp {row.tp} within one {domain}-GPU NVLink domain: attention TP over more than "
                f"{MAX_ATTENTION_TP} GPUs is not modelled (such runs use attention DP)")
    return None


def moe_parallelism(row: SiliconRow) -> dict:
    """The perf section's MoE split: all-EP as `expert_parallel`, a mixed TP x EP grid by its sizes.

    Without attention data parallelism every rank of the TP group holds all tokens, and the engines
    reduce the MoE output with one all-reduce over the group instead of an all-to-all (vLLM takes its
    all-to-all kernels only when dp > 1; SGLang's moe_a2a_backend defaults to none; TensorRT-LLM's
    all-to-all is for attention DP), so these rows play with moe_a2a_backend none.
    """
    if experts_over_tp(row):  # the recorded EP was the script config's, never passed to vLLM
        return {"expert_parallel": False, "moe_a2a_backend": "none"}
    split = {"expert_parallel": row.moe_ep > 1}
    if row.moe_tp > 1 and row.moe_ep > 1:
        split = {"expert_parallel": False, "moe_tp_size": row.moe_tp, "moe_ep_size": row.moe_ep}
    if row.attention_dp > 1:  # attention DP: experts over tp x dp GPUs (perf/attention_dp.py)
        split = {"expert_parallel": False, "moe_tp_size": row.moe_tp, "moe_ep_size": row.moe_ep,
                 "data_parallel_size": row.attention_dp}
    return {**split, "moe_a2a_backend": "none" if row.attention_dp <= 1 else "deepep"}


def row_dtype(row: SiliconRow) -> str:
    dtype = DTYPES[row.gemm_quant]
    if dtype == "fp4" and row.system.startswith("h"):  # no FP4 tensor cores on Hopper
        return "int4"
    return dtype


# The engine limits of AIConfigurator's benchmark deployments (its generator's rule_plugin/
# benchmark/<engine>.rule, aggregated workers): for vLLM and TensorRT-LLM the token budget of one
# step is the batch size plus the prompt plus 1,500 (TensorRT-LLM rounds it up to its 32-token KV
# blocks). For SGLang the generator sets max_prefill_tokens = prompt + 1,500 and
# --enable-mixed-chunk; played that way only the H200 rows came closer to the measurements (the
# others were measured with SGLang's defaults, prefill batches alone; docs/fidelity.md), so the
# generator's SGLang settings apply on the systems listed here. The file does not record each
# run's flags; this is a per-(GPU, engine[, version]) deployment setting, never per row: (system,
# version) pairs, "*" for every version. On B300 the 0.5.10.post1 runs (68 rows) match the
# generator's settings and the 0.5.9 ones SGLang's defaults (docs/fidelity-history.md, versions). Since sgb3_29 the
# release's 58 Qwen3.5 rows play the InferenceX scripts that ran them (inferencemax.SGLANG_SCRIPTS, no mixed chunks);
# only its 10 DeepSeek rows, whose script is not played, keep this.
SGLANG_MIXED_CHUNK = frozenset({("h200_sxm", "*"), ("b300_sxm", "0.5.10.post1")})
# Campaigns among those whose runs mixed prompts into the decodes but admitted more prompt tokens a step than the
# generator's max_prefill_tokens allows, so they play SGLang's own default (16,384; the chunk budget binds first).
# SGLang H200 0.5.6.post2 (AIConfigurator's eval campaign): by closed-loop arithmetic on the measured means alone
# (rate = users / (TTFT + (osl - 1) x TPOT), one token per request per mixed step), its Llama-3.1-8B runs at
# 1,000 / 100 admitted 2.9 (TP 4, 352 users) and 3.6 (TP 8, 448 users) prompts per step, where prompt + 1,500
# less the running decodes (SGLang's PrefillAdder takes `mixed_with_decode_tokens` off it) admits at most two.
# Keyed (system, version); docs/fidelity-history.md, "SGLang H200 0.5.6.post2: the eval campaign's prefill budget
# ... (issue 14, sgl8b)".
SGLANG_DEFAULT_PREFILL_BUDGET = frozenset({("h200_sxm", "0.5.6.post2")})
# SGLang's overlap loop (on by default) hands out a prefill batch's first tokens only after launching the next batch
# (`resolve_last_batch_result` waits for its `launch_done`); when that batch has prompt tokens too, its eager launch
# returns late (SGLang's own comment in 0.5.8.post1's `is_disable_overlap_for_batch`, "for two consecutive prefill
# batches, we disable overlap to improve the TTFT of the first batch", behind SGLANG_DISABLE_CONSECUTIVE_PREFILL_OVERLAP,
# default off; issue 10514 measured a 32 % lower mean TTFT without the overlap loop). How late is not sourced: the share
# of the next prefill step's GPU time, chosen on a grid (0.2-0.4 with the release's eta_compute 0.62-0.72) against TTFT
# + TPOT of the release's rows outside held_out_ids (held-out rows checked). Keyed (system, version); docs/fidelity-history.md,
# "SGLang H100 0.5.1.post1: the overlap loop's first tokens after a consecutive prefill (issue 14, sgh100_26)".
# The loop is the same in 0.5.5-0.5.10.post1 (the forward now launched from the scheduler thread, the last batch
# processed after it). B200 nightly-dev (Qwen3.5, `qwen3.5_bf16_b200.sh`, `--disable-radix-cache` so the overlap stays
# on): 1.0, the grid's best on the fit side (0.3-1.0) and better held out; Qwen3.5's first Gated DeltaNet layer reads
# its chunk lengths to the host (`prepare_chunk_indices`' `.tolist()`), so the next prefill's launch cannot end before
# the batch it follows has. Other releases fitted and not keyed: docs/fidelity-history.md, "... beyond H100 0.5.1.post1
# (issue 14, sgovl27)". Speculative rows (spec v1) run no overlap loop: inferencemax.sglang_recipe sets 0.
# B300 0.5.10.post1, once its Qwen3.5 rows play their InferenceX scripts (the same loop, radix cache off): 1.0, the fit
# side's best of 0 / 0.5 / 1.0 with the overlap take (58 rows' fit side 10.5 -> 9.0 %, held out 11.0 -> 10.6 %); its
# DeepSeek rows, still the generator's play, move -79.9 -> -77.7 % (docs/fidelity-history.md, sgb3_29).
SGLANG_CONSECUTIVE_PREFILL_LAUNCH_SHARE = {("h100_sxm", "0.5.1.post1"): 0.3, ("b200_sxm", "nightly-dev"): 1.0,
                                           ("b300_sxm", "0.5.10.post1"): 1.0}
# Campaigns deployed by AIConfigurator's generator whose SGLang KV cache is the checkpoint's own 16 bits. The generator
# writes `--kv-cache-dtype fp8_e4m3` only when the KV quant mode is fp8, inferred from the checkpoint's
# `kv_cache_quant_algo`, and `auto` otherwise (generator/rule_plugin/benchmark/sglang.rule,
# config/backend_config_mapping.yaml); SGLang's `auto` keeps the model's BF16 unless the quantization config names an
# FP8 KV scheme (ModelRunner.configure_kv_cache_dtype), which neither block-FP8 checkpoint of the H200 0.5.6.post2 eval
# campaign (Llama-3.1-8B, Qwen3-235B-A22B-FP8) does; servesim's `auto` would take FP8 for FP8 weights. Only this
# campaign's decode constants were refitted with it (calibration_serving.yaml); keyed (system, version); docs/fidelity-history.md,
# "SGLang H200 0.5.6.post2: the campaign's 16-bit KV cache ... (issue 14, sgh200v22)".
SGLANG_CHECKPOINT_KV = frozenset({("h200_sxm", "0.5.6.post2")})
# Measurement campaigns whose waves were not kept together: the runs that recorded no engine
# version (the file's oldest) of vLLM with Llama-3.1-70B on H100 and B200 measure a first token
# 1.5-2.5x faster than a drained warm-up followed by one wave of prompts can give at any token
# budget; played with the warm-up in the same closed loop (users already out of step) they come
# within 45-70 % (docs/fidelity-history.md, versions). Keyed (engine, system, version).
# Coefficient of variation of the front end's per-request time per (system, engine), fitted on
# the rows at even file positions; absent: 0. Empty: the spread that helps above 64 users (SGLang
# B200 / H200) breaks the waves at 9-64 users too, and on all of the group's even rows 0 is best
# (docs/fidelity-history.md, "Waves above 64 users: the client's start and a front-end time spread").
FRONTEND_TIME_CV: dict[tuple[str, str], float] = {}

WARMUP_CONTINUOUS = frozenset({("vllm", "h100_sxm", ""), ("vllm", "b200_sxm", "")})
# Measurement campaigns whose users ran out of step: the vLLM H100 runs that recorded no version
# (measured 2025-10-29 to 2025-12-05, before AIConfigurator's generator had benchmark rules) show,
# at 4 users and 8,192-token prompts, a first token as fast as one prefill alone (TP 2 / 4 / 8),
# which no wave of simultaneous prompts can give. Played with the users started evenly over one
# request's decode time (`ramp_cycles` 1); keyed (engine, system, version); docs/fidelity-history.md.
# Rows whose InferenceMAX script is known (the Llama-3.1-70B ones) play that script's client instead of either
# special case: all users start at once, and lengths over [0.8 x, x] drift them apart after the first round.
OUT_OF_STEP = frozenset({("vllm", "h100_sxm", "")})
# Batch slots held in a campaign (TensorRT-LLM 1.0.0rc3 on H100: inferred from TTFT's growth with the output length,
# not sourced; confirmed at the recorded 20 requests per user); keyed (engine, system, version); played unless
# ClientOptions.engine_slots_held is off (docs/fidelity-history.md, "TensorRT-LLM H100 1.0.0rc3: a token-rate ceiling").
ENGINE_SLOTS_HELD: dict[tuple[str, str, str], int] = {("trtllm", "h100_sxm", "1.0.0rc3"): 1}
# TensorRT-LLM campaigns whose measured first tokens look like a context run one engine iteration after its slot:
# the scheduler's `context_admission_lag_iterations` (fitted on the fit side, not sourced: py_executor.py's loops
# run a request in the iteration that takes it); keyed (engine, system, version); docs/fidelity-history.md, trthold29.
CONTEXT_ADMISSION_LAG: dict[tuple[str, str, str], int] = {("trtllm", "h100_sxm", "1.0.0rc3"): 1}
# Measured requests per user that a campaign's means record (validation/request_count.py reads them from the
# means' decimals: AIConfigurator's benchmark script, 20 rounds per user); these rows play exactly that count
# and no trailing round, as the script sends. Keyed (engine, system, version); docs/fidelity-history.md.
RECORDED_ROUNDS: dict[tuple[str, str, str], int] = {("trtllm", "h100_sxm", "1.0.0rc3"): 20}
# Measured requests per user of campaigns whose benchmark runner's source gives the count (played as
# RECORDED_ROUNDS: that count, no trailing round). SGLang H200 0.5.6.post2 is AIConfigurator's `eval` campaign
# (the `<org>_<model>_<org>_<model>_<system>_<backend>_agg_...` ids, one concurrency per deployment, the one its
# SLA search chose): 0.5.6.post2 is the SGLang of Dynamo 0.8.0-0.8.1 (AIConfigurator's
# generator/config/backend_version_matrix.yaml), and from 2025-10-14 until the eval module's removal on 2026-03-03
# its runner (src/aiconfigurator/eval/benchmarks/genai_perf_runner.py) ran `aiperf profile --request-count 10c
# --warmup-request-count 2c` (the warm-up drains first); docs/fidelity-history.md, "SGLang H200 by release and model ...
# (issue 14, sgh200)".
RUNNER_ROUNDS: dict[tuple[str, str, str], int] = {("sglang", "h200_sxm", "0.5.6.post2"): 10}
BUDGET_MARGIN_TOKENS = 1500
# SGLang's default `chunked_prefill_size` by GPU memory (server_args.py, `_handle_gpu_memory_settings`,
# the same in 0.5.1.post1 to 0.5.10.post1; neither the generator's templates nor SGLang's defaults
# set it otherwise): 8,192 tokens below 160 GiB (H100, H200), 16,384 above (B200, B300, GB200).
SGLANG_CHUNK_SMALL_GPU_TOKENS, SGLANG_CHUNK_LARGE_GPU_TOKENS, SGLANG_CHUNK_GPU_GIB = 8192, 16384, 160


def sglang_chunked_prefill_size(gpu: str) -> int:
    """SGLang's default chunk budget on `gpu` (a servesim GPU name)."""
    small = gpu_spec(gpu).hbm_bytes < SGLANG_CHUNK_GPU_GIB * 2**30
    return SGLANG_CHUNK_SMALL_GPU_TOKENS if small else SGLANG_CHUNK_LARGE_GPU_TOKENS


TRTLLM_TOKENS_PER_BLOCK = 32
# TensorRT-LLM as the generator deploys it, the same in every version it has a template for
# (backend_templates/trtllm/extra_engine_args.<version>.yaml.j2, 1.0.0rc3 to 1.3): chunked context
# off (`enable_chunked_prefill: false`), the default capacity scheduler policy
# (GUARANTEED_NO_EVICT), KV blocks of `tokens_per_block` 32 (TensorRT-LLM's default; the templates
# leave it unset) and no block reuse.
TRTLLM_SCHEDULER = {"name": "trtllm", "capacity_scheduler_policy": "GUARANTEED_NO_EVICT", "enable_chunked_context": False}


def engine_limits(row: SiliconRow, slots_held: bool = False) -> tuple[dict, dict]:
    """(engine section, scheduler section) of the deployment that ran `row`; slots_held: play ENGINE_SLOTS_HELD."""
    profile = engine_profile(row.backend)
    # batch_size is per attention rank (the attention-DP rows record batch_size x dp = concurrency)
    batch = max(row.batch_size, -(-row.concurrency // max(1, row.attention_dp)))
    held = ENGINE_SLOTS_HELD.get((row.backend, row.system, row.version), 0) if slots_held else 0
    engine = {"max_num_seqs": max(1, batch - held), "max_num_batched_tokens": profile.max_num_tokens,
              "gpu_memory_utilization": profile.kv_fraction, "enable_prefix_caching": False}
    scheduler: dict = {"name": SCHEDULERS[row.backend]}
    if row.backend in ("vllm", "trtllm"):
        budget = batch + row.isl + BUDGET_MARGIN_TOKENS
        if row.backend == "trtllm":
            budget = -(-budget // TRTLLM_TOKENS_PER_BLOCK) * TRTLLM_TOKENS_PER_BLOCK
            engine["block_size"] = TRTLLM_TOKENS_PER_BLOCK
            scheduler = dict(TRTLLM_SCHEDULER)
            lag = CONTEXT_ADMISSION_LAG.get((row.backend, row.system, row.version), 0)
            if lag:
                scheduler["context_admission_lag_iterations"] = lag
        engine["max_num_batched_tokens"] = budget
    elif row.backend == "sglang":
        scheduler["chunked_prefill_size"] = sglang_chunked_prefill_size(GPUS[row.system])
        if {(row.system, "*"), (row.system, row.version)} & SGLANG_MIXED_CHUNK:
            scheduler["enable_mixed_chunk"] = True
            if (row.system, row.version) not in SGLANG_DEFAULT_PREFILL_BUDGET:
                scheduler["max_prefill_tokens"] = row.isl + BUDGET_MARGIN_TOKENS
        share = SGLANG_CONSECUTIVE_PREFILL_LAUNCH_SHARE.get((row.system, row.version))
        if share:
            scheduler["consecutive_prefill_launch_share"] = share
    return engine, scheduler


def serving_calibration_path() -> str:
    """The shipped per-(GPU, engine) constants fitted on the silicon sample (a calibration file)."""
    return str(resources.files("servesim.perf").joinpath("data").joinpath(SERVING_CALIBRATION))


def calibration_data(calibration: str | None) -> CalibrationData | None:
    """The constants of row_scenario's `calibration` argument: "shipped", None, or a file path."""
    if calibration is None:
        return None
    return shipped_calibration(SERVING_CALIBRATION) if calibration == "shipped" else load_calibration(calibration)


def row_scenario(row: SiliconRow, options: ClientOptions = ClientOptions(), seed: int = 0,
                 overrides: Mapping[str, float] | None = None, frontend: Mapping[str, float] | None = None,
                 calibration: str | None = "shipped") -> Scenario:
    """The scenario that replays `row` (call only when inexpressible_reason(row) is None).

    overrides: perf constants set last (fitting); frontend: front-end constants overriding the
    engine's profile (fitting); calibration: "shipped" (the serving fit), None, or a file path.
    """
    row = played_row(row)
    users = row.concurrency
    counts = row_request_counts(row, options)
    engine, scheduler = engine_limits(row, options.engine_slots_held)
    lengths: dict = {"prompt_tokens": row.isl, "output_tokens": row.osl}
    recipe = inferencemax.recipe(row) if options.benchmark_recipes else None
    perf_fields: dict = {}
    script_constants: dict = {}  # the perf constants the script fixes: its kernel engine's, then its flags'
    if recipe is not None:
        engine.update(recipe.engine)
        scheduler.update(recipe.scheduler)
        perf_fields = dict(recipe.perf)
        prompt, output = inferencemax.client_lengths(row)
        lengths = {"prompt_tokens": prompt, "output_tokens": output}
        if recipe.kernels:
            script_constants.update(inferencemax.kernel_constants(recipe, GPUS[row.system], calibration_data(calibration)))
        script_constants.update(recipe.constants)
    elif row.backend == "sglang" and (row.system, row.version) in SGLANG_CHECKPOINT_KV:
        perf_fields["kv_cache_dtype"] = "bf16"  # the checkpoints' own precision (SGLANG_CHECKPOINT_KV)
    data = {
        "seed": seed, "model": row.model, "gpu": GPUS[row.system], "tp": row.tp, "dtype": row_dtype(row),
        "perf": {"engine": row.backend, "engine_version": row.version, **moe_parallelism(row), **perf_fields,
                 "overrides": {**script_constants, **(overrides or {})},
                 "calibration": serving_calibration_path() if calibration == "shipped" else calibration},
        "engine": engine,
        "scheduler": scheduler,
        "frontend": {"profile": profile_name(row.backend, GPUS[row.system], row.version) if options.frontend else "none",
                     "time_cv": frontend_time_cv(row, options), **(frontend or {})},
        "workload": {
            "arrival": {"process": "closed", "users": users, "think_time_s": 0.0, "think_time_dist": "fixed",
                        "ramp_up_s": options.ramp_up_s, "warmup_requests": counts.warmup},
            "lengths": lengths,
            "num_requests": counts.total,
        },
    }
    scenario = validate_scenario(data, f"row {row.id}")
    ramp_cycles = options.ramp_cycles
    if ramp_cycles is None and recipe is None and (row.backend, row.system, row.version) in OUT_OF_STEP:
        ramp_cycles = 1.0
    if ramp_cycles is not None:
        arrival = scenario.workload.arrival.model_copy(update={"ramp_up_s": ramp_cycles * decode_cycle_s(scenario, row)})
        scenario = scenario.model_copy(update={"workload": scenario.workload.model_copy(update={"arrival": arrival})})
    return scenario


def row_request_counts(row: SiliconRow, options: ClientOptions) -> RequestCounts:
    """The warm-up, measured and trailing requests `row` sends (validation/client.py)."""
    row = played_row(row)
    script = options.benchmark_recipes and inferencemax.recipe(row) is not None
    in_loop = not options.warmup_drains or (not script and (row.backend, row.system, row.version) in WARMUP_CONTINUOUS)
    rounds = inferencemax.ROUNDS_PER_USER if script else None
    if options.recorded_rounds and rounds is None:
        key = (row.backend, row.system, row.version)
        rounds = RECORDED_ROUNDS.get(key, RUNNER_ROUNDS.get(key))
    return request_counts(row.concurrency, options, in_loop, rounds)


def frontend_time_cv(row: SiliconRow, options: ClientOptions) -> float:
    """The spread of the row's front-end time: the option if set, else the fitted (GPU, engine) value."""
    if not options.frontend:
        return 0.0
    if options.frontend_time_cv is not None:
        return options.frontend_time_cv
    return FRONTEND_TIME_CV.get((row.system, row.backend), 0.0)


def scenario_perf_model(scenario: Scenario) -> PerfModel:
    """The step-time model a row's scenario plays (its GPU, model, TP, dtype and calibration)."""
    return build_perf_model(scenario.model, scenario.gpu, scenario.tp, scenario.dtype, scenario.perf)


def decode_cycle_s(scenario: Scenario, row: SiliconRow) -> float:
    """How long one request decodes with every user decoding: osl steps of a decode-only batch of
    `concurrency` sequences at the mean context. Users started evenly over it stay out of step
    (fixed lengths keep their phases), the opposite of starting them all at once (docs/fidelity-history.md)."""
    perf = scenario_perf_model(scenario)
    ctx = row.isl + row.osl // 2
    return row.osl * perf.step_time_s([], [ctx] * row.concurrency)
