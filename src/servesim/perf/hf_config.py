"""Import a model from a Hugging Face `config.json` (a file on disk; never the network).

Supports the families in the catalogue: Llama/Mistral/Qwen2 style (GQA, SwiGLU, optional sliding
window), Mixtral and Qwen-MoE style (routed experts), DeepSeek-V2/V3 (MLA, shared experts, leading
dense layers), OPT, Falcon and BLOOM (2-matrix MLP), hybrid Gated DeltaNet models (Qwen3-Next, Qwen3.5: `layer_types`
or `full_attention_interval` with `linear_*` head counts). Unknown `model_type`s with Llama-style keys
are read the Llama way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from servesim.errors import InputError
from servesim.perf._catalog import read_user_file
from servesim.perf.models import LinearAttentionSpec, MLASpec, ModelSpec, MoESpec

_NON_GATED = {"opt", "falcon", "bloom", "gpt2", "gpt_neox", "gptj"}
# Recurrent-state element sizes by the config's `mamba_ssm_dtype` (Qwen3.5: float32, which vLLM
# adopts from the config and SGLang uses by default, `--mamba-ssm-dtype float32`).
_STATE_BYTES = {"float32": 4.0, "fp32": 4.0, "bfloat16": 2.0, "bf16": 2.0, "float16": 2.0, "fp16": 2.0}


def spec_from_config_file(path: Path) -> ModelSpec:
    """Read `path` as a config.json; the model is named after its folder."""
    config = read_user_file(path, "model config", json.loads, "JSON")
    if not isinstance(config, dict):
        raise InputError(f"model config {str(path)!r} must hold a JSON object")
    name = path.parent.name or path.stem
    return spec_from_config(name, config, source=str(path))


def _first(config: dict[str, Any], keys: tuple[str, ...], source: str, default: Any = None) -> Any:
    for key in keys:
        if config.get(key) is not None:
            return config[key]
    if default is None:
        raise InputError(f"{source}: missing {keys[0]!r} (or {', '.join(keys[1:]) or 'an alias'})")
    return default


def spec_from_config(name: str, config: dict[str, Any], source: str) -> ModelSpec:
    """Build a ModelSpec from the dictionary of a config.json."""
    model_type = str(config.get("model_type", "llama")).lower()
    layers = int(_first(config, ("num_hidden_layers", "n_layer", "num_layers"), source))
    hidden = int(_first(config, ("hidden_size", "n_embd", "d_model"), source))
    heads = int(_first(config, ("num_attention_heads", "n_head"), source))
    kv_heads = int(_first(config, ("num_key_value_heads", "num_kv_heads", "n_head_kv"), source, default=heads))
    if model_type == "falcon" and not config.get("new_decoder_architecture"):
        kv_heads = 1 if config.get("multi_query", True) else heads  # Falcon-7B style multi-query
    head_dim = int(config.get("head_dim") or hidden // heads)
    gated = model_type not in _NON_GATED
    default_ffn = 4 * hidden  # GPT-style MLPs without an explicit width
    ffn = int(_first(config, ("intermediate_size", "ffn_dim", "ffn_hidden_size", "n_inner"), source, default=default_ffn))
    vocab = int(_first(config, ("vocab_size",), source))
    tied = bool(config.get("tie_word_embeddings", model_type in {"opt", "bloom", "falcon"}))

    moe = _moe(config)
    mla = _mla(config)
    window = config.get("sliding_window")
    use_window = config.get("use_sliding_window", True) and window is not None
    window_layers = layers
    if use_window and config.get("max_window_layers") is not None and model_type.startswith("qwen"):
        window_layers = max(0, layers - int(config["max_window_layers"]))
    if use_window and isinstance(config.get("layer_types"), list):  # gpt-oss: per-layer kinds
        window_layers = sum(1 for kind in config["layer_types"] if kind == "sliding_attention")
    if use_window and config.get("num_sliding_layers") is not None:  # the catalogue's short form
        window_layers = int(config["num_sliding_layers"])
    linear = _linear_attention(config, layers, source)
    if mla is not None:
        kv_heads = heads  # MLA has no KV heads in the GQA sense; the latent is shared by all heads
    if heads <= 0 or kv_heads <= 0 or heads % kv_heads:
        raise InputError(f"{source}: num_attention_heads {heads} must be a positive multiple of the KV heads {kv_heads}")
    return ModelSpec(
        name=name,
        num_layers=layers,
        hidden_size=hidden,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=ffn,
        vocab_size=vocab,
        gated_mlp=gated,
        tied_embeddings=tied,
        moe=moe,
        mla=mla,
        sliding_window=int(window) if use_window and window_layers else None,
        num_window_layers=window_layers if use_window else 0,
        max_position_embeddings=int(config["max_position_embeddings"]) if config.get("max_position_embeddings") else None,
        linear_attention=linear,
        # Qwen3-Next and Qwen3.5's hybrid layouts gate their full attention (Qwen3-Next's config
        # omits the key; Qwen3.5's says attn_output_gate: true)
        attn_output_gate=bool(config.get("attn_output_gate", linear is not None and model_type.startswith(("qwen3_next", "qwen3_5")))),
        gated_deltanet=linear is not None or model_type.startswith(("qwen3_next", "qwen3_5")),
    )


def _moe(config: dict[str, Any]) -> MoESpec | None:
    experts = config.get("num_local_experts") or config.get("num_experts") or config.get("n_routed_experts")
    if not experts:
        return None
    width = config.get("moe_intermediate_size") or config["intermediate_size"]
    return MoESpec(
        num_experts=int(experts),
        top_k=int(config.get("num_experts_per_tok", 2)),
        expert_intermediate_size=int(width),
        num_shared_experts=int(config.get("n_shared_experts") or 0),
        num_dense_layers=int(config.get("first_k_dense_replace") or 0),
    )


def _mla(config: dict[str, Any]) -> MLASpec | None:
    if not config.get("kv_lora_rank"):
        return None
    return MLASpec(
        q_lora_rank=int(config.get("q_lora_rank") or 0),
        kv_lora_rank=int(config["kv_lora_rank"]),
        qk_rope_head_dim=int(config["qk_rope_head_dim"]),
        qk_nope_head_dim=int(config["qk_nope_head_dim"]),
        v_head_dim=int(config["v_head_dim"]),
    )


def _linear_attention(config: dict[str, Any], layers: int, source: str) -> LinearAttentionSpec | None:
    """The Gated DeltaNet layers of a hybrid config: those `layer_types` names `linear_attention`,
    else every layer but each `full_attention_interval`-th (Qwen3-Next's layout); None without them."""
    if not config.get("linear_num_value_heads"):
        return None
    kinds = config.get("layer_types")
    if isinstance(kinds, list):
        linear = sum(1 for kind in kinds if kind == "linear_attention")
    else:
        interval = int(_first(config, ("full_attention_interval",), source))
        linear = layers - layers // interval
    dtype = str(config.get("mamba_ssm_dtype", "float32")).lower()
    if dtype not in _STATE_BYTES:
        raise InputError(f"{source}: mamba_ssm_dtype {dtype!r} is not one of {', '.join(_STATE_BYTES)}")
    v_heads = int(config["linear_num_value_heads"])
    return LinearAttentionSpec(
        num_layers=linear,
        num_key_heads=int(config.get("linear_num_key_heads") or v_heads),
        num_value_heads=v_heads,
        key_head_dim=int(_first(config, ("linear_key_head_dim",), source)),
        value_head_dim=int(_first(config, ("linear_value_head_dim",), source)),
        conv_kernel=int(config.get("linear_conv_kernel_dim") or 4),
        state_bytes=_STATE_BYTES[dtype],
    )
