"""Building a `PerfModel` from names: catalogue look-ups, parallelism checks, calibration.

perf_model.py holds the model itself (pure step-time arithmetic on resolved terms); this module
holds the one place that turns a (model, GPU, tp, pp, dtype, PerfConfig) request into those
terms: it resolves catalogue names, validates tp / pp, picks the engine profile and calibration
constants, applies a GPU clock cap and sizes the weights per GPU.
"""

from __future__ import annotations

import math
from dataclasses import replace

from servesim.errors import InputError
from servesim.perf.calibration import CalibrationData, load_calibration, resolve_constants
from servesim.perf.config import PerfConfig
from servesim.perf.engines import engine_profile
from servesim.perf.hardware import GPUSpec, dtype_spec, gpu_spec, kv_dtype_bytes
from servesim.perf.models import ModelSpec, check_tp, embedding_params, kv_elements_per_token_layer, model_spec, total_params
from servesim.perf.attention_dp import build_attention_dp
from servesim.perf.perf_model import PerfModel
from servesim.perf.terms import LM_HEAD_BYTES, StepTerms, moe_split


def at_clock(gpu: GPUSpec, ratio: float, memory_sensitivity: float) -> GPUSpec:
    """The GPU with its SM clock at `ratio` of the maximum: peak FLOP/s x ratio, achieved HBM
    bandwidth x ratio^memory_sensitivity (the memory clock itself does not move; only the SMs
    issuing loads slow down). Unchanged at ratio 1."""
    if ratio == 1.0:
        return gpu
    return replace(gpu, peak_flops={k: v * ratio for k, v in gpu.peak_flops.items()},
                   hbm_bw_bytes_s=gpu.hbm_bw_bytes_s * ratio ** memory_sensitivity)


def _weight_bytes_per_gpu(m: ModelSpec, weight_bytes: float, tp: int, pp: int) -> int:
    layer_elems = total_params(m) - embedding_params(m)
    stage_layers = math.ceil(m.num_layers / pp)
    # With PP the first stage holds the embedding and the last the LM head; one of them per GPU.
    emb_elems = embedding_params(m) if pp == 1 else m.vocab_size * m.hidden_size
    return int(layer_elems * stage_layers / m.num_layers / tp * weight_bytes + emb_elems / tp * LM_HEAD_BYTES)


def build_perf_model(model: str, gpu: str, tp: int = 1, dtype: str = "bf16", config: PerfConfig = PerfConfig(),
                     pp: int = 1) -> PerfModel:
    """Build the step-time model; bad names, tp, pp or dtype raise InputError naming allowed values.

    model: catalogue name or alias (any case) or a path to a Hugging Face config.json;
    gpu: catalogue name or alias (any case); config.calibration: a file from `servesim calibrate`.
    """
    config = config if config is not None else PerfConfig()  # PerfConfig is frozen, so the default is safe to share
    user = load_calibration(config.calibration) if config.calibration else None
    return build_with_calibration(model, gpu, tp, dtype, config, pp, user)


def build_with_calibration(model: str, gpu: str, tp: int, dtype: str, config: PerfConfig, pp: int,
                           user: CalibrationData | None, shipped_fit: bool = True) -> PerfModel:
    """`build_perf_model` with the user calibration given as data (used by fitting and validation)."""
    spec = model_spec(model)
    g = at_clock(gpu_spec(gpu), config.gpu_clock_ratio, config.memory_clock_sensitivity)
    d = dtype_spec(dtype, g)
    if isinstance(tp, bool) or not isinstance(tp, int):
        raise InputError(f"tp must be an integer, got {tp!r}")
    check_tp(spec, tp)
    if isinstance(pp, bool) or not isinstance(pp, int) or not 1 <= pp <= spec.num_layers:
        raise InputError(f"pp must be an integer from 1 to {spec.num_layers} (the layers of {spec.name}), got {pp!r}")
    kv_name, kv_bytes = kv_dtype_bytes(config.kv_cache_dtype, d)
    eng = engine_profile(config.engine, config.engine_version)
    constants = resolve_constants(g.name, d.name, eng.name, eng.constants, user, config.overrides, shipped_fit,
                                  version=eng.version)
    dp = config.data_parallel_size
    _, moe_ep = moe_split(tp * dp, config.expert_parallel, config.moe_tp_size, config.moe_ep_size)
    terms = StepTerms(spec, g, d, kv_bytes, tp, pp, constants, moe_ep if dp == 1 else 1, config.moe_a2a_backend != "none")
    kv_per_token = math.ceil(spec.num_attention_layers / pp) * kv_elements_per_token_layer(spec, tp) * kv_bytes
    model = PerfModel(
        model_name=spec.name, gpu_name=g.name, tp=tp, dtype=d.name, pp=pp, engine=eng.name,
        kv_cache_dtype=kv_name, kv_bytes_per_token=int(kv_per_token),
        weight_bytes_per_gpu=_weight_bytes_per_gpu(spec, d.weight_bytes, tp, pp), hbm_bytes=g.hbm_bytes,
        constants=constants, terms=terms, misc_bytes=config.misc_bytes, max_model_len=spec.max_position_embeddings,
        graph_max_tokens=config.cudagraph_max_tokens,
    )
    if dp > 1:  # attention data parallelism: dp ranks of this model in lock-step over the experts
        return build_attention_dp(model, d.weight_bytes, dp, moe_ep, config.data_parallel_balance)
    return model
