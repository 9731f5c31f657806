"""Calibration constants: the few numbers that turn peak specs into measured step times.

A calibration file (YAML) holds `defaults` plus `entries`, each entry a `match` on any of
`gpu`, `dtype`, `engine`, `version` (the engine release, `PerfConfig.engine_version`, matched
exactly) and the constants it `set`s:

    defaults: {eta_compute: 0.7, ...}
    entries:
      - match: {gpu: h100-sxm, dtype: fp8}
        set: {eta_compute: 0.55}

Constants for one (gpu, dtype, engine) are resolved in this order, later wins: the priors'
defaults (calibration_priors.yaml), the engine profile's constants (engines.yaml), the priors'
entries, the shipped fit (calibration_default.yaml, fitted to shared/data/perf), then a user
calibration file's defaults and entries, then `PerfConfig.overrides`; entries apply from least to most specific (number of
match keys), file order breaking ties. So constants are shared per GPU, dtype, engine and engine
release, never per measured point; an entry without `version` serves every release, one with it
only that release (more specific, so it wins over the entry without).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping

import yaml

from servesim.errors import InputError
from servesim.perf._catalog import SafeLoader, catalogue, read_user_file

PRIORS_FILE = "calibration_priors.yaml"
DEFAULT_FILE = "calibration_default.yaml"
MATCH_KEYS = ("gpu", "dtype", "engine", "version")


@dataclass(frozen=True)
class Constants:
    """Resolved constants for one (gpu, dtype, engine); every field is a calibration knob."""

    eta_compute: float = 0.7  # achieved share of the dtype's peak FLOP/s in large GEMMs
    eta_memory: float = 0.85  # achieved share of HBM bandwidth when streaming weights
    smoothing_k: float = 2.0  # roofline blend exponent (1 = additive, large = max())
    eta_attn_compute: float = 0.5  # share of BF16 peak reached by prefill (flash) attention
    eta_attn_memory: float = 0.75  # share of HBM bandwidth reached reading the KV cache in decode
    ar_bw_eff: float = 0.75  # share of the scale-up link bandwidth an all-reduce reaches
    # Share of the link bandwidth the ring (NCCL) all-reduce reaches on large messages (0, off, by
    # default: ar_bw_eff). The engines all-reduce small (decode) messages with their own one-shot
    # kernels and large (prefill) ones with NCCL, whose large-message bus bandwidth nccl-tests
    # measures per system; this lets the prefill's all-reduces take that figure while the one-shot
    # path keeps the ar_bw_eff fitted on decode (roofline.allreduce_s; docs/fidelity-history.md, "Prefill
    # by prompt length, model and GPU").
    ar_ring_bw_eff: float = 0.0
    moe_imbalance: float = 1.0  # busiest expert's load over the mean (>= 1)
    pcie_eff: float = 0.8  # share of PCIe bandwidth reached by KV swaps
    gqa_sharing: float = 1.0  # share of GQA's KV reuse the decode kernel realises (0: K/V re-read per query head)
    layer_floor_s: float = 10e-6  # fixed GPU time per layer (kernel launches and tails)
    ar_launch_s: float = 10e-6  # fixed cost per all-reduce call
    step_overhead_s: float = 1e-3  # engine CPU time per iteration
    seq_overhead_s: float = 10e-6  # engine CPU time per running sequence per iteration
    # GPU-side time per sequence in the step (0, off, by default): per-sequence work that an overlapping
    # scheduler cannot hide and that the roofline terms do not price (per-request metadata, sampling,
    # decode-kernel splits per sequence); fitted per (GPU, engine) on the serving runs (docs/fidelity-history.md).
    seq_gpu_s: float = 0.0
    # Time per layer of a step that runs eagerly, outside CUDA graphs (0, off, by default): an engine
    # that captures graphs for decode batches only launches every kernel of a step with prompt tokens
    # from Python, and small prefills are launch-bound. SGLang runs extend and mixed batches so
    # (`enable_piecewise_cuda_graph` defaults to False); fitted per (GPU, engine) on the serving runs
    # (docs/fidelity-history.md, "SGLang: eager prefill steps").
    eager_layer_s: float = 0.0
    # CPU time per layer to launch the kernels of a step that runs without CUDA graphs, above the
    # deployment's capture size (`PerfConfig.cudagraph_max_tokens`; 0, off, by default). The launches
    # run ahead of the GPU, so such a step takes max(GPU time, layers x this): a floor that small
    # prompt steps hit and long ones hide, unlike `eager_layer_s`, which adds to every prompt step.
    # vLLM's dispatcher runs a step above its largest captured size with no graph at all
    # (`CUDAGraphMode.NONE`, v1/cudagraph_dispatcher.py); docs/fidelity-history.md (issue 14, kimi22).
    eager_floor_layer_s: float = 0.0
    # Time per layer that a step above the capture size adds to its GPU time (0, off, by default), the
    # additive form of the same launches: where the host does not run ahead of the GPU within a layer, a
    # graph-less step costs its GPU work plus its launches, so its price grows with the prompt as the GPU
    # work does, where the floor above stays flat until the GPU passes it. With both set such a step takes
    # max(GPU + layers x this, layers x floor). vLLM B200 0.17.0's Kimi-K2.5 runs: 8k prompt steps cost
    # what the 1k ones cost plus the GPU's difference, eager or not (docs/fidelity-history.md, issue 14, v017_24).
    graphless_layer_s: float = 0.0
    # Time per step with prompt tokens of a model with Gated DeltaNet layers (`ModelSpec.gated_deltanet`; 0, off,
    # by default): SGLang's FLA `l2norm_fwd_kernel` (q and k of every DeltaNet layer's chunked prefill) took the
    # step's token count `T` as a `tl.constexpr` until mid-2026, so Triton compiles it again for every token
    # count the server process has not run yet, inline on the scheduler before the forward launches (SGLang PRs
    # 23448, 30403: ~90-110 ms a compile). Random prompt lengths make nearly every prefill step's count new, so
    # it is priced per step; decode steps replay CUDA graphs and never compile (docs/fidelity-history.md, qwpf20).
    gdn_compile_s: float = 0.0
    # Share of their own per-token time (GEMMs, element-wise work, all-reduces) that the prompt tokens of
    # a mixed step, one that runs prompt tokens beside decodes, cost on top (0, off, by default;
    # prefill-only and decode-only steps never pay it). The serving runs show other users' prompts
    # costing a request's decode more than the step model prices a mixed step (docs/fidelity-history.md,
    # "Mixed prefill + decode steps"); the engines' sources name no single mechanism for it, so it is
    # fitted per (GPU, engine). Relative, so one value serves the group's small and large models.
    mixed_prefill_slowdown: float = 0.0
    token_overhead_s: float = 0.0  # engine CPU time per scheduled token
    overlap_cpu: float = 0.0  # 1: CPU work overlaps the GPU step (max), 0: it adds to it
    custom_allreduce: float = 0.0  # 1: small all-reduces take the one-shot path (roofline.allreduce_s)
    # GEMM efficiency rising with M (the tokens of a step): a GEMM of a few hundred rows fills few of
    # the GPU's tiles/SMs, one of thousands (a prefill) fills all of them. 0 (the default): eta_compute
    # at every M; else the share of peak GEMMs approach at large M, reached halfway at gemm_m_half_tokens
    # (terms.StepTerms.eta_compute_at).
    eta_compute_large_m: float = 0.0
    gemm_m_half_tokens: float = 2048.0  # tokens per step at which eta is halfway to eta_compute_large_m
    # Share of peak FLOP/s reached by the MoE expert GEMMs (0, off, by default: the dense GEMMs' eta at
    # every M). Engines run the experts as grouped GEMMs over tokens sorted by expert (e.g. SGLang's
    # Triton fused_moe for block-FP8 weights on Hopper), whose efficiency is the kernel's, not the dense
    # GEMMs'; it decides prefill time of MoE models (compute-bound) and barely decode (weight-bound).
    eta_moe_compute: float = 0.0
    # GPU time per prompt token per quantised linear layer (the attention projections and the dense or
    # shared-expert FFN, not the routed experts' fused MoE kernel) that the activation's quantisation
    # costs beyond the GEMM roofline (0, off, by default). TensorRT-LLM's block-scaled FP8 linear on
    # Blackwell before release 1.3 quantises activations at about 27 ns a token per layer at prefill
    # sizes and nothing at decode sizes (AIConfigurator's B200 GEMM tables; docs/fidelity-history.md, "FP8
    # prefill on Blackwell"), so it is priced per prompt token (terms.StepTerms.act_quant_s_per_token).
    act_quant_token_s: float = 0.0
    # GPU time per prompt token of a step, the same for every model and TP of a release (0, off, by
    # default): a time that follows the prompt's tokens, not any layer's work, so it is neither in the
    # roofline terms nor in `act_quant_token_s` (which grows with the quantised linears). Stalls the
    # decodes that share the step as well as the prompt's own first token.
    prompt_token_gpu_s: float = 0.0
    # Bytes per element of each token's top_k expanded rows (hidden wide) that a GPU writes and reads
    # beside the expert GEMMs in a MoE layer (0, off, by default). TensorRT-LLM's trtllm-gen fused MoE
    # (Blackwell) runs routing, permute + gate-up GEMM, down GEMM and a finalize kernel: the down GEMM
    # writes one BF16 row per (token, expert) and finalize reads them back to sum the top_k rows, so
    # each GPU moves top_k x hidden x 4 bytes a token whatever the experts' TP split (its partial rows
    # are hidden wide); expert parallelism divides it by the ranks (each holds only its experts' rows).
    # AIConfigurator's B200 MoE tables show that cost: the kernel at TP 8 takes as long as at TP 4
    # (terms.StepTerms.moe_copy_s_per_token; docs/fidelity-history.md, "MoE at TP on TensorRT-LLM B200").
    moe_copy_bytes: float = 0.0
    # A fixed GPU time per MoE layer of the fused MoE kernel (its routing, token alignment and several launches: time
    # the roofline of the experts' weights and FLOPs does not hold), taken as a smooth max with that roofline at the
    # constants' smoothing_k (0, off, by default): a decode of a few tokens pays about all of it, a step whose
    # experts' reads or FLOPs take several times longer almost none. vLLM's block-FP8 fused MoE on H100 takes
    # 44-128 us a layer at 1-8 tokens at MiniMax-M2.5's shape and EP 4 where the roofline gives 17-89 us
    # (AIConfigurator's H100 vLLM 0.19.0 MoE table; terms.TokenTerms.linear_s; docs/fidelity-history.md, vhop28).
    moe_floor_s: float = 0.0
    # Attention data parallelism only (perf/attention_dp.py; 0 by default, read by nothing else): GPU
    # time per lock-step step and per sequence of the ranks' padded batch (dp x the largest rank's
    # sequences) that the lock-step terms do not price, fitted per engine on the attention-DP serving
    # runs (validation/attention_dp.py; docs/fidelity-history.md, "Attention data parallelism").
    dp_step_s: float = 0.0
    dp_seq_s: float = 0.0


CONSTANT_NAMES = tuple(f.name for f in fields(Constants))

_SHARES = ("eta_compute", "eta_memory", "eta_attn_compute", "eta_attn_memory", "ar_bw_eff", "pcie_eff")
#: Physical range of each constant: (low, high, low included). Shares of a peak are in (0, 1]
#: (0 would make a step take forever, above 1 beats the hardware); times are >= 0.
CONSTANT_RANGES: dict[str, tuple[float, float, bool]] = {
    **{name: (0.0, 1.0, False) for name in _SHARES},
    "gqa_sharing": (0.0, 1.0, True),
    "overlap_cpu": (0.0, 1.0, True),
    "custom_allreduce": (0.0, 1.0, True),
    "eta_compute_large_m": (0.0, 1.0, True),  # 0 = off (eta_compute at every M)
    "eta_moe_compute": (0.0, 1.0, True),  # 0 = off (the dense GEMMs' eta)
    "ar_ring_bw_eff": (0.0, 1.0, True),  # 0 = off (ar_bw_eff on the ring path too)
    "gemm_m_half_tokens": (0.0, math.inf, False),
    "smoothing_k": (1.0, math.inf, True),
    "moe_imbalance": (1.0, math.inf, True),
    "mixed_prefill_slowdown": (0.0, math.inf, True),  # 0 = off
    "moe_copy_bytes": (0.0, math.inf, True),  # 0 = off
    **{name: (0.0, math.inf, True) for name in CONSTANT_NAMES if name.endswith("_s")},
}


def _range_text(name: str) -> str:
    low, high, closed = CONSTANT_RANGES[name]
    if high == math.inf:
        return f">= {low:g}" if closed else f"> {low:g}"
    return f"in {'[' if closed else '('}{low:g}, {high:g}]"


def _in_range(name: str, value: float) -> bool:
    low, high, closed = CONSTANT_RANGES[name]
    return (value >= low if closed else value > low) and value <= high and math.isfinite(value)


@dataclass(frozen=True)
class Entry:
    match: dict[str, str]
    values: dict[str, float]


@dataclass(frozen=True)
class CalibrationData:
    """The parsed content of one calibration file."""

    defaults: dict[str, float]
    entries: tuple[Entry, ...]


def _check_values(values: Any, where: str) -> dict[str, float]:
    if not isinstance(values, Mapping):
        raise InputError(f"{where}: expected a mapping of constant names to numbers")
    out: dict[str, float] = {}
    for key, value in values.items():
        if key not in CONSTANT_NAMES:
            raise InputError(f"{where}: unknown constant {key!r}; allowed: {', '.join(CONSTANT_NAMES)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{where}: constant {key!r} must be a number, got {value!r}")
        if not _in_range(key, float(value)):
            raise InputError(f"{where}: constant {key!r} must be {_range_text(key)}, got {value!r}")
        out[key] = float(value)
    return out


def parse_calibration(raw: Any, where: str) -> CalibrationData:
    """Validate the YAML content of a calibration file."""
    if not isinstance(raw, Mapping):
        raise InputError(f"{where}: a calibration file holds a mapping with 'defaults' and 'entries'")
    unknown = set(raw) - {"defaults", "entries", "meta"}
    if unknown:
        raise InputError(f"{where}: unknown key {sorted(unknown)[0]!r}; allowed: defaults, entries, meta")
    defaults = _check_values(raw.get("defaults") or {}, f"{where} defaults")
    entries = []
    for i, item in enumerate(raw.get("entries") or []):
        at = f"{where} entries[{i}]"
        if not isinstance(item, Mapping) or set(item) - {"match", "set"}:
            raise InputError(f"{at}: expected keys 'match' and 'set'")
        match = item.get("match") or {}
        bad = [k for k in match if k not in MATCH_KEYS]
        if bad:
            raise InputError(f"{at}: unknown match key {bad[0]!r}; allowed: {', '.join(MATCH_KEYS)}")
        if "version" in match and not isinstance(match["version"], str):  # YAML reads 1.10 as the number 1.1
            raise InputError(f"{at}: match version must be quoted text such as '0.18.0', got {match['version']!r}")
        entries.append(Entry({k: str(v).lower() for k, v in match.items()}, _check_values(item.get("set") or {}, at)))
    return CalibrationData(defaults, tuple(entries))


def shipped_calibration(filename: str = DEFAULT_FILE) -> CalibrationData:
    """A calibration file shipped in the package (the priors or the shipped fit)."""
    return parse_calibration(catalogue(filename), f"package data {filename}")


def load_calibration(path: str | Path) -> CalibrationData:
    """Read a calibration file written by `servesim calibrate` (or by hand)."""
    p = Path(path)
    # libyaml's loader, as for the catalogues: `servesim validate` reads the shipped serving fit (17 KB)
    # for every row it plays, 40 ms with PyYAML's pure-Python loader on a 2-core host, 4 ms with it
    parse = lambda text: yaml.load(text, Loader=SafeLoader)  # noqa: E731
    return parse_calibration(read_user_file(p, "calibration file", parse, "YAML"), str(p))


def _apply(values: dict[str, float], data: CalibrationData, key: Mapping[str, str]) -> None:
    values.update(data.defaults)
    matching = [e for e in data.entries if all(key.get(k) == v for k, v in e.match.items())]
    for entry in sorted(matching, key=lambda e: len(e.match)):  # stable: file order breaks ties
        values.update(entry.values)


def matched_values(data: CalibrationData, key: Mapping[str, str]) -> dict[str, float]:
    """What `data` alone sets for `key` (gpu, dtype, engine, version): its defaults, then the matching
    entries, most specific last."""
    values: dict[str, float] = {}
    _apply(values, data, key)
    return values


def resolve_constants(gpu: str, dtype: str, engine: str, engine_constants: Mapping[str, float],
                      user: CalibrationData | None = None,
                      overrides: Mapping[str, float] | None = None, shipped_fit: bool = True,
                      version: str = "") -> Constants:
    """The constants for one (gpu, dtype, engine[, engine release]) after layering (see the module
    docstring); `engine_constants` already carry the release's engine defaults (engines.py).

    `shipped_fit=False` leaves out calibration_default.yaml (used to refit it from the priors).
    """
    key = {"gpu": gpu, "dtype": dtype, "engine": engine, "version": version.strip().lower()}
    priors = shipped_calibration(PRIORS_FILE)
    values: dict[str, float] = dict(priors.defaults)
    values.update(_check_values(engine_constants, f"engine {engine} constants"))
    _apply(values, CalibrationData({}, priors.entries), key)
    if shipped_fit:
        _apply(values, shipped_calibration(DEFAULT_FILE), key)
    if user is not None:
        _apply(values, user, key)
    if overrides:
        values.update(_check_values(overrides, "perf.overrides"))
    return replace(Constants(), **values)


def dump_calibration(data: CalibrationData, meta: Mapping[str, Any] | None = None) -> str:
    """YAML text of a calibration file (what `servesim calibrate` writes)."""
    raw: dict[str, Any] = {}
    if meta:
        raw["meta"] = dict(meta)
    raw["defaults"] = dict(data.defaults)
    raw["entries"] = [{"match": dict(e.match), "set": dict(e.values)} for e in data.entries]
    return yaml.safe_dump(raw, sort_keys=False)
