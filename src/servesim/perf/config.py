"""`PerfConfig`: the `perf:` section of a scenario."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class PerfConfig(BaseModel):
    """How step times are computed for the scenario's model, GPU, parallelism and dtype."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: str = Field("vllm", description="Engine profile (CPU and launch overhead constants): vllm, sglang, trtllm, ideal, ... (see `servesim catalog engines`).")
    calibration: str | None = Field(None, description="Path to a calibration file written by `servesim calibrate`; its constants override the shipped ones.")
    kv_cache_dtype: str = Field("auto", description="KV cache precision: auto (fp8 for fp8 weights, else 16-bit), bf16, fp16 or fp8.")
    expert_parallel: bool = Field(False, description="MoE models: place whole experts on GPUs of the TP group (all-to-all) instead of splitting every expert (all-reduce).")
    misc_bytes: int = Field(1 << 30, ge=0, description="GPU memory outside weights, activations and KV (CUDA context, NCCL buffers, CUDA graphs), subtracted before sizing the KV cache.")
    overrides: dict[str, float] = Field(default_factory=dict, description="Calibration constants to set last, e.g. {eta_memory: 0.8}; names as in `servesim catalog constants`.")
