"""The server's own settings (the scenario file describes the replica it emulates)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ServeConfig(BaseModel):
    """Options of `servesim serve` (each is also a command-line flag)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    host: str = "127.0.0.1"
    """Address to listen on. Loopback by default (vLLM binds every interface; an emulator
    is usually a local test fixture, so exposing it is opt-in: --host 0.0.0.0)."""
    port: int = Field(8000, ge=0, le=65535)
    """TCP port (vLLM's default 8000; 0 picks a free port and prints it)."""
    time_scale: float = Field(1.0, gt=0)
    """Wall-clock seconds per simulated second: 1 = real time, 0.1 = ten times faster than the
    GPU would be, 10 = ten times slower. Latency metrics are reported in wall seconds."""
    api_key: str | None = None
    """Require `Authorization: Bearer <key>` on /v1 routes (as `vllm serve --api-key`)."""
    served_model_name: str | None = None
    """Model name clients must send (None = the scenario's model name)."""
    tokenizer: Literal["auto", "tiktoken", "approx"] = "auto"
    """How prompts are counted: tiktoken's cl100k_base (a real BPE close to Llama 3's), or
    `approx` (GPT-style word pieces, see docs/serve.md); auto = tiktoken if it loads, else approx."""
    eos_mean_tokens: float = Field(256.0, ge=1)
    """Without ignore_eos the emulated model stops by itself after a seeded geometric number of
    tokens with this mean (also the mean distance to a `stop` string); max_tokens caps it."""
    trace_out: Path | None = None
    """Write every served request (arrival, lengths, prefix hashes) to this CSV trace, one row
    per request as it arrives, for replay with `servesim run --set workload.trace.name=PATH`."""
