"""Engine configuration, named and defaulted as vLLM names and defaults them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from servesim.errors import InputError


class EngineConfig(BaseModel):
    """vLLM engine arguments that shape scheduling and memory (`vllm serve` spelling)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    block_size: int = Field(16, ge=1, le=1024)
    """Tokens per KV-cache block (vLLM CUDA default 16)."""
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    """Fraction of GPU memory the engine may use for weights, activations and KV cache."""
    max_num_batched_tokens: int | None = Field(None, ge=1)
    """Token budget of one step. Unset: vLLM's `vllm serve` default for the GPU
    (8192 on >= 70 GiB GPUs other than A100, else 2048); without chunked prefill at least
    max_model_len, as vLLM sets it, since a prompt must then fit in one step."""
    max_num_seqs: int | None = Field(None, ge=1)
    """Most requests running at once. Unset: 1024 on >= 70 GiB GPUs other than A100, else 256."""
    max_model_len: int | None = Field(None, ge=2)
    """Longest prompt + output a request may have. Unset: the model's context length."""
    enable_chunked_prefill: bool = True
    """Split long prompts across steps (vLLM v1 default on)."""
    enable_prefix_caching: bool = True
    """Automatic prefix caching by chained block hashes (vLLM v1 default on)."""
    long_prefill_token_threshold: int = Field(0, ge=0)
    """Cap on the prefill tokens one request gets per step (0 = no cap)."""
    swap_space_gb: float = Field(4.0, ge=0.0)
    """CPU swap space per GPU in GiB, used by swap-based schedulers (vLLM v0 default 4)."""
    fast_forward: bool = True
    """Advance decode-only stretches many steps at once (identical results; off = step by step).
    Not used while speculative decoding is on (acceptances are random per step)."""
    num_speculative_tokens: int = Field(0, ge=0, le=64)
    """Draft tokens proposed per decoding request and step (vLLM `speculative_config`
    `num_speculative_tokens`; 0 = speculative decoding off). Applied by the engine with any
    scheduler; each decode then verifies 1 + k tokens and emits accepted + 1."""
    spec_acceptance_rate: float = Field(0.7, ge=0.0, le=1.0)
    """Probability that each draft token is accepted, independently (the first rejection ends
    the accepted run): E[tokens per step] = (1 - a^(k+1)) / (1 - a). Draws come from the run's seed."""
    spec_acceptance_curve: tuple[tuple[int, float], ...] | None = None
    """Per-draft acceptance rate by output position instead of `spec_acceptance_rate`: breakpoints
    (tokens the request has emitted, rate), positions increasing, linear between them and flat
    outside (`replica/spec_acceptance.py`). Unset: the one i.i.d. rate. Runs with a curve are
    stepped one by one (no speculative fast-forward)."""
    spec_draft_cost_ratio: float = Field(0.05, ge=0.0)
    """Cost of drafting one token for the batch, as a fraction of a plain target decode step of
    the same batch (n-gram ~0, an EAGLE/MTP head ~0.05, a separate draft model ~ its size ratio)."""
    spec_draft_layers: int = Field(0, ge=0)
    """0: drafts priced by `spec_draft_cost_ratio` and the verify pass's logits per sequence. n > 0:
    priced by their work (`perf/spec_price.py`): each draft token runs n of the target's layers
    and its LM head over the batch (an MTP / EAGLE head: DeepSeek's MTP module is one layer), and
    the verify pass computes logits for every verified token. Runs with it are stepped one by one."""
    max_loras: int = Field(1, ge=1)
    """LoRA adapters resident on the GPU at once, so at most this many distinct adapters per
    batch (vLLM `--max-loras`, default 1). Used only when requests name adapters."""
    max_cpu_loras: int | None = Field(None, ge=1)
    """Adapters kept in host memory (a reload from there costs PCIe time, not storage time);
    unset: `max_loras`, as vLLM; it must be >= `max_loras` (vLLM refuses less)."""
    max_lora_rank: int = Field(16, ge=1)
    """Rank of every adapter (vLLM `--max-lora-rank`, default 16); sets the adapter size."""
    lora_target_modules: int = Field(4, ge=1)
    """Weight matrices per layer an adapter modifies (4: q, k, v, o projections). Size =
    2 * rank * hidden_size * layers * modules * 2 bytes (bf16 A and B matrices, S-LoRA's count)."""
    lora_size_mb: float | None = Field(None, gt=0)
    """Adapter size in MB (1e6 bytes), overriding the size from rank and model dimensions."""
    lora_pcie_gb_per_s: float = Field(25.0, gt=0)
    """Host-to-GPU bandwidth for an adapter held in host memory, GB/s (PCIe 4.0 x16 effective)."""
    lora_storage_gb_per_s: float = Field(2.0, gt=0)
    """Bandwidth of a cold adapter load from storage (local NVMe SSD), GB/s; the adapter then
    also enters the host-memory tier."""

    @model_validator(mode="after")
    def _curve(self) -> "EngineConfig":
        curve = self.spec_acceptance_curve
        if curve is not None:
            positions = [p for p, _ in curve]
            if not curve or positions[0] < 0 or any(b <= a for a, b in zip(positions, positions[1:])):
                raise ValueError(f"spec_acceptance_curve positions must be >= 0 and increasing, got {positions}")
            if any(not 0.0 <= r <= 1.0 for _, r in curve):
                raise ValueError(f"spec_acceptance_curve rates must be in [0, 1], got {[r for _, r in curve]}")
        return self

    @model_validator(mode="after")
    def _cpu_loras(self) -> "EngineConfig":
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise ValueError(f"max_cpu_loras ({self.max_cpu_loras}) must be >= max_loras ({self.max_loras})")
        return self


def check_engine_limits(cfg: EngineConfig) -> None:
    """Refuse what vLLM's SchedulerConfig refuses at start-up (on the resolved config)."""
    tokens, seqs, model_len = cfg.max_num_batched_tokens, cfg.max_num_seqs, cfg.max_model_len
    if not cfg.enable_chunked_prefill and tokens < model_len:
        raise InputError(f"engine.max_num_batched_tokens ({tokens}) is smaller than engine.max_model_len "
                         f"({model_len}) with chunked prefill off, so longer prompts could never run; "
                         "raise max_num_batched_tokens, lower max_model_len or enable chunked prefill")
    if tokens < seqs:
        raise InputError(f"engine.max_num_batched_tokens ({tokens}) must be >= engine.max_num_seqs ({seqs})")


def serve_batch_defaults(gpu_name: str, hbm_bytes: float) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) that `vllm serve` picks for a GPU.

    vLLM's EngineArgs.get_batch_defaults: devices with >= 70 GiB that are not A100s get
    8192 / 1024 for the API server; everything else 2048 / 256.
    """
    big = hbm_bytes >= 70 * 2**30 and "a100" not in gpu_name.lower()
    return (8192, 1024) if big else (2048, 256)
