"""Model architectures (the `models.yaml` catalogue or a Hugging Face config.json) and their sizes.

Parameter counts follow shared/specs/perf-model.md §2: per layer, attention projections plus a
dense or mixture-of-experts FFN; plus the input embedding and (unless tied) the LM head. Biases
and norm weights are ignored (< 0.1 % of any catalogued model).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from servesim.errors import InputError
from servesim.perf._catalog import catalogue, resolve

MODEL_FILE = "models.yaml"


@dataclass(frozen=True)
class MoESpec:
    """Mixture-of-experts FFN shape."""

    num_experts: int  # routed experts per MoE layer
    top_k: int  # routed experts per token
    expert_intermediate_size: int  # FFN width of one routed expert
    num_shared_experts: int = 0  # always-active experts (DeepSeek), each of expert width
    num_dense_layers: int = 0  # leading layers with a dense FFN instead (DeepSeek first_k_dense_replace)


@dataclass(frozen=True)
class MLASpec:
    """Multi-head latent attention (DeepSeek-V2/V3): the KV cache holds a compressed latent."""

    q_lora_rank: int  # 0 means queries are projected directly from the hidden state
    kv_lora_rank: int
    qk_rope_head_dim: int
    qk_nope_head_dim: int
    v_head_dim: int


@dataclass(frozen=True)
class LinearAttentionSpec:
    """Gated DeltaNet layers (Qwen3-Next, Qwen3.5): linear attention with a fixed recurrent state per
    sequence instead of a KV cache. Per layer: q/k/v/z and beta/alpha projections from the hidden
    state, a depthwise causal convolution over q, k and v, the delta-rule recurrence, out projection.
    q and k have `num_key_heads`, v and the state `num_value_heads` (each key head serves several)."""

    num_layers: int  # how many layers are linear attention (the rest are full attention)
    num_key_heads: int
    num_value_heads: int
    key_head_dim: int
    value_head_dim: int
    conv_kernel: int = 4  # causal convolution width; the conv state keeps the last conv_kernel - 1 inputs
    state_bytes: float = 4.0  # recurrent-state element (the config's mamba_ssm_dtype; float32 by default)

    @property
    def key_dim(self) -> int:
        return self.num_key_heads * self.key_head_dim

    @property
    def value_dim(self) -> int:
        return self.num_value_heads * self.value_head_dim

    @property
    def conv_channels(self) -> int:
        """Channels of the short convolution: q, k and v concatenated."""
        return 2 * self.key_dim + self.value_dim


@dataclass(frozen=True)
class ModelSpec:
    """The architecture numbers the performance model needs."""

    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int  # dense FFN width
    vocab_size: int
    gated_mlp: bool = True  # SwiGLU (3 matrices) vs plain 2-matrix MLP (OPT, Falcon, BLOOM)
    tied_embeddings: bool = False  # LM head shares the embedding matrix (read once per step anyway)
    moe: MoESpec | None = None
    mla: MLASpec | None = None
    sliding_window: int | None = None  # attention span cap of the windowed layers
    num_window_layers: int = 0  # how many layers use the sliding window
    max_position_embeddings: int | None = None  # longest sequence the model supports (None: unknown)
    linear_attention: LinearAttentionSpec | None = None  # hybrid models: the linear-attention layers
    attn_output_gate: bool = False  # full attention gated by sigmoid(x W_g) (Qwen3-Next/3.5: q_proj twice as wide)
    # The checkpoint runs Gated DeltaNet layers through FLA's Triton kernels (Qwen3-Next / Qwen3.5), also
    # when the entry plays a stand-in shape without `linear_attention`: engine behaviours tied to those
    # kernels (`gdn_compile_s`) follow the checkpoint, not the stand-in.
    gated_deltanet: bool = False

    @property
    def num_linear_layers(self) -> int:
        return 0 if self.linear_attention is None else self.linear_attention.num_layers

    @property
    def num_attention_layers(self) -> int:
        """Layers with softmax attention, and so a KV cache (full or sliding-window)."""
        return self.num_layers - self.num_linear_layers

    @property
    def num_moe_layers(self) -> int:
        return 0 if self.moe is None else self.num_layers - self.moe.num_dense_layers

    @property
    def num_dense_ffn_layers(self) -> int:
        return self.num_layers - self.num_moe_layers


def attention_params(m: ModelSpec) -> int:
    """Weights of one layer's attention projections (Q, K, V, O or the MLA factorisation)."""
    h = m.hidden_size
    if m.mla is not None:
        a = m.mla
        qk_dim = a.qk_nope_head_dim + a.qk_rope_head_dim
        if a.q_lora_rank:
            q = h * a.q_lora_rank + a.q_lora_rank * m.num_heads * qk_dim
        else:
            q = h * m.num_heads * qk_dim
        kv = h * (a.kv_lora_rank + a.qk_rope_head_dim) + a.kv_lora_rank * m.num_heads * (a.qk_nope_head_dim + a.v_head_dim)
        return q + kv + m.num_heads * a.v_head_dim * h
    d = m.head_dim
    q_heads = 2 * m.num_heads if m.attn_output_gate else m.num_heads  # the gate is a second query-sized projection
    return h * d * (q_heads + 2 * m.num_kv_heads) + m.num_heads * d * h


def linear_attention_params(m: ModelSpec) -> int:
    """Weights of one Gated DeltaNet layer: q, k, v and the output gate z (in_proj_qkvz), beta and
    alpha per value head (in_proj_ba), the convolution's taps, the out projection (A_log, dt_bias
    and the norm are a few thousand numbers, ignored like every norm)."""
    la = m.linear_attention
    if la is None:
        return 0
    h = m.hidden_size
    return (h * (2 * la.key_dim + 2 * la.value_dim + 2 * la.num_value_heads) + la.conv_channels * la.conv_kernel
            + la.value_dim * h)


def dense_ffn_params(m: ModelSpec) -> int:
    return (3 if m.gated_mlp else 2) * m.hidden_size * m.intermediate_size


def expert_params(m: ModelSpec) -> int:
    """Weights of one routed expert (always gated in the catalogued MoE models)."""
    assert m.moe is not None
    return 3 * m.hidden_size * m.moe.expert_intermediate_size


def embedding_params(m: ModelSpec) -> int:
    """Input embedding plus the LM head when it is not tied."""
    return m.vocab_size * m.hidden_size * (1 if m.tied_embeddings else 2)


def total_params(m: ModelSpec) -> int:
    layers = m.num_attention_layers * attention_params(m) + m.num_dense_ffn_layers * dense_ffn_params(m)
    layers += m.num_linear_layers * linear_attention_params(m)
    if m.moe is not None:
        per_moe_layer = (m.moe.num_experts + m.moe.num_shared_experts) * expert_params(m) + m.hidden_size * m.moe.num_experts
        layers += m.num_moe_layers * per_moe_layer
    return layers + embedding_params(m)


def active_params(m: ModelSpec) -> int:
    """Parameters touched by one token (routed experts counted top_k times)."""
    if m.moe is None:
        return total_params(m)
    inactive = (m.moe.num_experts - m.moe.top_k) * expert_params(m)
    return total_params(m) - m.num_moe_layers * inactive


def kv_elements_per_token_layer(m: ModelSpec, tp: int) -> int:
    """KV cache elements one token adds in one layer on one GPU.

    GQA/MHA: K and V for the local KV heads; when tp > num_kv_heads each GPU still holds one head
    (heads are replicated, not split). MLA: the latent plus the RoPE key, replicated on every rank.
    """
    if m.mla is not None:
        return m.mla.kv_lora_rank + m.mla.qk_rope_head_dim
    return 2 * max(1, m.num_kv_heads // tp) * m.head_dim


def linear_state_bytes_per_seq(m: ModelSpec, tp: int, conv_bytes: float) -> float:
    """Fixed state one sequence holds on one GPU across the linear-attention layers (0 without them):
    the recurrent state, value heads x key dim x value dim in the state dtype, plus the convolution's
    last conv_kernel - 1 inputs in `conv_bytes` (the model dtype); both split over TP by heads."""
    la = m.linear_attention
    if la is None:
        return 0.0
    recurrent = la.num_value_heads * la.key_head_dim * la.value_head_dim * la.state_bytes
    conv = (la.conv_kernel - 1) * la.conv_channels * conv_bytes
    return la.num_layers * (recurrent + conv) / tp


def model_spec(name_or_path: str) -> ModelSpec:
    """A catalogued model (case-insensitive name or alias) or a config.json path on disk."""
    from servesim.perf.hf_config import spec_from_config, spec_from_config_file

    text = str(name_or_path)
    if text.lower().endswith(".json") or Path(text).is_file():
        return spec_from_config_file(Path(text))
    canonical, entry = resolve(MODEL_FILE, "model", text)
    return spec_from_config(canonical, entry["config"], source=f"catalogue entry {canonical}")


def model_names() -> list[str]:
    return list(catalogue(MODEL_FILE))


def check_tp(m: ModelSpec, tp: int) -> None:
    """Raise InputError unless the heads split evenly over `tp` GPUs."""
    allowed = [t for t in (1, 2, 4, 8, 16) if m.num_heads % t == 0 and (m.num_kv_heads % t == 0 or t % m.num_kv_heads == 0)]
    if tp not in allowed:
        raise InputError(f"tp {tp} does not split {m.name} ({m.num_heads} heads, {m.num_kv_heads} KV heads); allowed tp: {', '.join(map(str, allowed))}")
