"""Config of request structure: attributes mix, shared prefixes, sessions and agent programs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from servesim.workload.config_base import IntSpec, Strict, check_int_spec


class SloClassConfig(Strict):
    """One SLO class: its share of requests and its latency targets."""

    share: float = Field(1.0, ge=0)
    """Relative weight of this class in the mix (shares are normalised)."""
    ttft_s: float | None = Field(None, gt=0)
    """Time-to-first-token target, s (None = scenario-wide default)."""
    tpot_s: float | None = Field(None, gt=0)
    """Time-per-output-token target, s (None = scenario-wide default)."""


class LoRAMixConfig(Strict):
    """Which LoRA adapter each request names: `count` adapters `lora-0` .. `lora-{count-1}`
    with Zipf popularity (adapter k has weight 1 / (k + 1)^zipf_s, as S-LoRA's power-law mix),
    or explicit `proportions`. Drawn from the run's seed; a trace's `lora` column overrides."""

    count: int = Field(0, ge=0, le=100_000)
    """Number of adapters (0 = requests name none, unless `proportions` is set)."""
    zipf_s: float = Field(1.0, ge=0)
    """Zipf exponent of the popularity (0 = uniform; larger = more skewed)."""
    proportions: dict[str, float] = {}
    """Adapter name -> share (normalised); replaces `count` and `zipf_s` when set."""
    share: float = Field(1.0, ge=0, le=1)
    """Share of requests that name an adapter (the rest use the base model)."""

    @model_validator(mode="after")
    def _shares(self) -> "LoRAMixConfig":
        mix = self.proportions
        if any(v < 0 for v in mix.values()) or (mix and sum(mix.values()) <= 0):
            raise ValueError(f"attributes.loras.proportions must be >= 0 with a positive sum, got {mix}")
        return self

    def mix(self) -> dict[str, float]:
        """Adapter name -> weight (empty: no adapters)."""
        if self.proportions:
            return dict(self.proportions)
        return {f"lora-{k}": _zipf_weight(k + 1, self.zipf_s) for k in range(self.count)}


def _zipf_weight(rank: int, s: float) -> float:
    """1 / rank^s; 0 where rank^s is beyond a float (a large exponent: the first adapters take all)."""
    try:
        return 1.0 / rank ** s
    except OverflowError:
        return 0.0


class AttributesConfig(Strict):
    """Per-request attributes drawn from a mix. Trace columns, when present, take precedence."""

    tenants: dict[str, float] = {}
    """Tenant name -> share (normalised). Empty: 'default' (servegen: the client id)."""
    priorities: dict[int, float] = {}
    """Priority (lower = more important) -> share. Empty: all 0."""
    slo_classes: dict[str, SloClassConfig] = {}
    """SLO class name -> share and targets. Empty: no class, scenario-wide SLOs."""
    offline_share: float = Field(0.0, ge=0, le=1)
    """Share of requests marked offline (batch, latency-insensitive)."""
    loras: LoRAMixConfig = LoRAMixConfig()
    """LoRA adapters the requests name (default: none)."""

    @model_validator(mode="after")
    def _shares(self) -> AttributesConfig:
        for name, mix in (("tenants", self.tenants), ("priorities", self.priorities)):
            if any(v < 0 for v in mix.values()) or (mix and sum(mix.values()) <= 0):
                raise ValueError(f"attributes.{name} shares must be >= 0 with a positive sum, got {mix}")
        if self.slo_classes and sum(c.share for c in self.slo_classes.values()) <= 0:
            raise ValueError("attributes.slo_classes shares must have a positive sum")
        return self


class SharedPrefixConfig(Strict):
    """A shared system prompt: each request (session, program) starts with one of `groups` prefixes."""

    tokens: int = Field(1024, ge=1)
    """Length of each shared prefix, tokens (added in front of the sampled prompt)."""
    groups: int = Field(1, ge=1, le=10_000)
    """Number of distinct prefixes (e.g. applications or system prompts), chosen uniformly
    (each is made at the start: at most 10,000)."""


class SessionsConfig(Strict):
    """Multi-turn conversations: each arrival starts a session; turn n+1's prompt is turn n's
    prompt + answer + a new message, and it arrives a think time after turn n finishes."""

    turns: IntSpec = (2, 6)
    """Turns per session: fixed or [low, high] uniform."""
    think_time_s: float = Field(10.0, ge=0)
    """Mean time between a turn's answer and the user's next message, s."""
    think_time_dist: Literal["exponential", "fixed"] = "exponential"
    """Distribution of think times."""
    max_prompt_tokens: int = Field(32768, ge=1)
    """End the session when the next turn's prompt would exceed this (context window)."""

    @model_validator(mode="after")
    def _check(self) -> SessionsConfig:
        check_int_spec("sessions.turns", self.turns, 1)
        return self


class CallConfig(Strict):
    """One LLM call of an agent program."""

    parents: list[int] = []
    """Indices of earlier calls this call waits for (the DAG edges)."""
    tool_s: float = Field(0.0, ge=0)
    """Tool time between the last parent finishing and this call being issued, s (mean if exponential)."""
    prompt_tokens: IntSpec | None = None
    """New prompt tokens of this call (None = sampled from `lengths`)."""
    output_tokens: IntSpec | None = None
    """Output tokens (None = sampled from `lengths`)."""

    @model_validator(mode="after")
    def _check(self) -> CallConfig:
        check_int_spec("programs.calls[].prompt_tokens", self.prompt_tokens, 1)
        check_int_spec("programs.calls[].output_tokens", self.output_tokens, 1)
        return self


def _default_calls() -> list[CallConfig]:
    # A small ReAct-style chain: think, call a tool, think again, answer.
    return [CallConfig(), CallConfig(parents=[0], tool_s=1.0), CallConfig(parents=[1], tool_s=1.0)]


class ProgramsConfig(Strict):
    """Agent programs: each arrival starts a DAG of LLM calls; a call is issued once all its
    parents have finished plus its tool time (closed loop inside the simulation)."""

    calls: list[CallConfig] = Field(default_factory=_default_calls)
    """The DAG in topological order (parents refer to earlier indices)."""
    tool_time_dist: Literal["fixed", "exponential"] = "fixed"
    """Distribution of tool times (mean = each call's tool_s)."""
    inherit_context: bool = True
    """A call's prompt extends its first parent's prompt + answer (the KV prefix can be reused)."""

    @model_validator(mode="after")
    def _dag(self) -> ProgramsConfig:
        if not self.calls:
            raise ValueError("programs.calls must list at least one call")
        for i, call in enumerate(self.calls):
            bad = [p for p in call.parents if not 0 <= p < i]
            if bad or len(set(call.parents)) != len(call.parents):
                raise ValueError(
                    f"programs.calls[{i}].parents must be distinct indices of earlier calls (0..{i - 1}), "
                    f"got {call.parents}"
                )
        return self
