"""The `workload:` section of a scenario: what traffic to generate or replay.

Short forms are accepted where they are unambiguous: `trace: azure-conv` is the same as
`trace: {name: azure-conv}`, and token counts are either a number (fixed) or `[low, high]`
(uniform, inclusive). Every field has a default; `docs/workloads.md` has an example per feature.

    workload: {trace: azure-conv}
    workload: {arrival: {process: poisson, rate_per_s: 5}, lengths: {dataset: sharegpt}, num_requests: 1000}
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from servesim.workload.config_base import IntSpec, Strict
from servesim.workload.config_source import ArrivalConfig, LengthsConfig, RateCurveConfig, TraceConfig
from servesim.workload.config_structure import (
    AttributesConfig,
    CallConfig,
    ProgramsConfig,
    SessionsConfig,
    SharedPrefixConfig,
    SloClassConfig,
)

__all__ = [
    "ArrivalConfig",
    "AttributesConfig",
    "CallConfig",
    "DEFAULT_NUM_REQUESTS",
    "IntSpec",
    "LengthsConfig",
    "ProgramsConfig",
    "RateCurveConfig",
    "SessionsConfig",
    "SharedPrefixConfig",
    "SloClassConfig",
    "TraceConfig",
    "WorkloadConfig",
]

DEFAULT_NUM_REQUESTS = 1000  # generated workloads given neither num_requests nor duration_s
GENERATED_ONLY = ("arrival", "lengths", "sessions", "programs", "shared_prefix")  # not with a trace


class WorkloadConfig(Strict):
    """Either a trace replay (`trace`) or a generated workload (`arrival` + `lengths`, optionally
    structured as `sessions` or `programs`), with attributes, shared prefixes and limits."""

    trace: TraceConfig | None = None
    """Replay a trace (shipped name or file). Excludes arrival, lengths, sessions and programs."""
    arrival: ArrivalConfig = ArrivalConfig()
    """Arrival process of generated requests (or of sessions / programs)."""
    lengths: LengthsConfig = LengthsConfig()
    """Prompt and output lengths of generated requests."""
    sessions: SessionsConfig | None = None
    """Make each arrival a multi-turn conversation."""
    programs: ProgramsConfig | None = None
    """Make each arrival an agent program (a DAG of LLM calls and tool calls)."""
    shared_prefix: SharedPrefixConfig | None = None
    """Give generated requests one of a few shared system prompts (prefix-cache reuse)."""
    attributes: AttributesConfig = AttributesConfig()
    """Tenant, priority, SLO class and online/offline mix."""
    num_requests: int | None = Field(None, ge=1)
    """Stop after this many requests in total (follow-ups included). None: every trace row, or
    1000 for a generated workload without duration_s."""
    duration_s: float | None = Field(None, gt=0)
    """Produce no request that would arrive after this time, s (None = no time limit)."""
    hash_block_tokens: int = Field(16, ge=1)
    """Block size, tokens, of the prefix hash ids that sessions, programs and shared prefixes
    generate (traces keep their own, e.g. Mooncake's 512)."""

    @model_validator(mode="before")
    @classmethod
    def _short_trace(cls, data: Any) -> Any:
        # `trace: azure-conv` is short for `trace: {name: azure-conv}`.
        if isinstance(data, dict) and isinstance(data.get("trace"), str):
            data = {**data, "trace": {"name": data["trace"]}}
        return data

    @model_validator(mode="after")
    def _exclusive(self) -> WorkloadConfig:
        if self.trace is not None:
            clash = sorted(self.model_fields_set & set(GENERATED_ONLY))
            if clash:
                raise ValueError(f"workload.trace replays a trace; remove workload.{clash[0]} (it applies to generated workloads)")
        if self.sessions is not None and self.programs is not None:
            raise ValueError("workload.sessions and workload.programs are exclusive; choose one")
        return self

    @model_serializer(mode="wrap")
    def _dump_applicable(self, handler: SerializerFunctionWrapHandler) -> dict:
        # A trace replay writes no generator sections: they do not apply, and would not load again.
        data = handler(self)
        if self.trace is not None:
            data = {k: v for k, v in data.items() if k not in GENERATED_ONLY}
        return data

    @property
    def request_limit(self) -> int | None:
        """The effective request-count limit (see num_requests)."""
        if self.num_requests is not None or self.trace is not None or self.duration_s is not None:
            return self.num_requests
        return DEFAULT_NUM_REQUESTS
