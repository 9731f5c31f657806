"""`PerfConfig`: the `perf:` section of a scenario."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class PerfConfig(BaseModel):
    """How step times are computed for the scenario's model, GPU, parallelism and dtype."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    engine: str = Field("vllm", description="Engine profile (CPU and launch overhead constants): vllm, sglang, trtllm, ideal, ... (see `servesim catalog engines`).")
    engine_version: str = Field("", description="Release of the engine (e.g. 0.18.0): applies the engine's per-release defaults from engines.yaml (`versions:` rules) and calibration entries that match this `version`. Empty (default): the base profile; non-release builds (nightly-..., custom branches) count as newer than every release.")
    calibration: str | None = Field(None, description="Path to a calibration file written by `servesim calibrate`; its constants override the shipped ones.")
    kv_cache_dtype: str = Field("auto", description="KV cache precision: auto (fp8 for fp8 weights, else 16-bit), bf16, fp16 or fp8.")
    expert_parallel: bool = Field(False, description="MoE models: place whole experts on GPUs of the TP group (all-to-all) instead of splitting every expert (all-reduce).")
    moe_tp_size: int | None = Field(None, ge=1, description="MoE models: ranks each expert's GEMMs are split over (TensorRT-LLM's moe_tp_size); moe_tp_size x moe_ep_size = tp. Unset: tp // moe_ep_size, or from expert_parallel when both are unset.")
    moe_ep_size: int | None = Field(None, ge=1, description="MoE models: ranks the experts are divided over (TensorRT-LLM's moe_ep_size, SGLang's ep_size); dispatch/combine all-to-all over these ranks plus an all-reduce over the moe_tp_size ranks of each expert. Unset: tp // moe_tp_size, or from expert_parallel.")
    moe_a2a_backend: Literal["deepep", "none"] = Field("deepep", description="MoE expert parallelism's token exchange (SGLang's moe_a2a_backend): deepep = dispatch/combine all-to-all over the EP ranks (vLLM does this only with data parallelism, dp > 1); none = every rank holds all tokens and the MoE output is all-reduced over the TP group, as without EP (vLLM, SGLang's default and TensorRT-LLM without attention DP). servesim's default keeps its earlier expert-parallel model.")
    data_parallel_size: int = Field(1, ge=1, description="MoE models: attention data parallelism (vLLM's --data-parallel-size with --enable-expert-parallel, SGLang's --enable-dp-attention dp size, TensorRT-LLM's enable_attention_dp ranks): this many attention ranks of `tp` GPUs each, every rank with its own scheduler and KV cache, stepping in lock-step over experts divided across all tp x data_parallel_size GPUs (moe_tp_size x moe_ep_size must then equal tp x data_parallel_size). engine.max_num_seqs and max_num_batched_tokens are per rank. 1 (default): no attention DP.")
    data_parallel_balance: Literal["auto", "vllm", "trtllm", "round_robin"] = Field("auto", description="How new requests are assigned to attention-DP ranks: vllm = the rank with the least 4 x waiting + running (vLLM's DP load balancer), trtllm = the rank with the fewest active prompt tokens among those below the balanced request count (TensorRT-LLM's attention-DP balancing), round_robin (SGLang's default load_balance_method); auto (default) = the engine's own.")
    cudagraph_max_tokens: int = Field(0, ge=0, description="Largest step (tokens) the engine runs from a captured CUDA graph (vLLM's max_cudagraph_capture_size; by default min(2 x max_num_seqs, 512)): a larger step runs without graphs, its kernels launched one by one: it takes at least the calibration's eager_floor_layer_s per layer, and its GPU time plus graphless_layer_s per layer. 0 (default): not modelled, every step priced as graphed.")
    misc_bytes: int = Field(1 << 30, ge=0, description="GPU memory outside weights, activations and KV (CUDA context, NCCL buffers, CUDA graphs), subtracted before sizing the KV cache.")
    gpu_clock_ratio: float = Field(1.0, gt=0, le=1, description="SM clock as a share of its maximum (frequency locking or power capping): peak FLOP/s scale with it, HBM bandwidth with its `memory_clock_sensitivity` power, so compute-bound steps slow in proportion and memory-bound ones much less.")
    memory_clock_sensitivity: float = Field(0.2, ge=0, le=1, description="Exponent k of the achieved HBM bandwidth's dependence on the SM clock (bandwidth x ratio^k); decode slows as ratio^-k, k = 0.1-0.3 in DVFS studies (shared/specs/cluster.md §7.1).")
    overrides: dict[str, float] = Field(default_factory=dict, description="Calibration constants to set last, e.g. {eta_memory: 0.8}; names as in `servesim catalog constants`.")
