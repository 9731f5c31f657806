"""The plan file (`servesim plan PLAN.yaml`): base scenario, search space, goodput, traffic, objective.

A plan names a base scenario (the model, workload and SLO stay fixed) and lists, per knob, the
values to try. The candidates are the cross product of those lists. Every list has a default of
one value (the base scenario's behaviour), so a plan only spells out what it varies:

    scenario: ../azure-conv.yaml
    slo: {ttft_s: 2.0, tpot_s: 0.1}
    traffic: {rate_per_s: 20}
    space: {gpu: [h100-sxm, a100-80gb, l40s], tp: [1, 2], max_num_seqs: [128, 256]}
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from servesim.errors import InputError
from servesim.workload.config_base import check_int_spec

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class GPUChoice(BaseModel):
    """A GPU type to try, with the price used for cost objectives."""

    model_config = _STRICT
    name: str
    """GPU name from the catalogue (`servesim catalog gpus`)."""
    price_usd_h: float | None = Field(None, ge=0)
    """Price per GPU-hour in USD; None = the catalogue's dated list price."""

    @model_validator(mode="before")
    @classmethod
    def _short(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data  # `gpu: [h100-sxm, ...]`


class SpaceConfig(BaseModel):
    """Values to try per knob; candidates are their cross product. Names follow vLLM's flags."""

    model_config = _STRICT
    gpu: list[GPUChoice] = [GPUChoice(name="h100-sxm")]
    """GPU types (name, or {name, price_usd_h})."""
    tp: list[int] = [1]
    """Tensor-parallel sizes (vLLM `--tensor-parallel-size`)."""
    pp: list[int] = [1]
    """Pipeline-parallel sizes (vLLM `--pipeline-parallel-size`); only 1 is simulated so far."""
    expert_parallel: list[bool] = [False]
    """MoE models: experts placed whole on GPUs (vLLM `--enable-expert-parallel`)."""
    dtype: list[str] = ["bf16"]
    """Weight precisions (bf16, fp8, int4, ...)."""
    mode: list[Literal["aggregated", "disaggregated"]] = ["aggregated"]
    """aggregated: prefill and decode on the same replicas; disaggregated: separate pools."""
    prefill_decode_ratio: list[str] = ["1:1"]
    """Disaggregated only: prefill:decode replica ratios such as 1:2."""
    replicas: Literal["auto"] | list[int] = "auto"
    """Replicas per deployment; auto = as many as the traffic needs (ceil(rate / goodput))."""
    max_num_seqs: list[int | None] = [None]
    """vLLM `--max-num-seqs` (None = vLLM's default for the GPU)."""
    max_num_batched_tokens: list[int | None] = [None]
    """vLLM `--max-num-batched-tokens` (None = vLLM's default for the GPU)."""
    enable_chunked_prefill: list[bool] = [True]
    """vLLM `--enable-chunked-prefill`."""
    scheduler: list[str] = ["vllm"]
    """Scheduler names (`servesim catalog schedulers`)."""
    router: list[str] = ["round-robin"]
    """Router names, used when a deployment has several replicas."""

    @field_validator("tp", "pp", "replicas", "max_num_seqs", "max_num_batched_tokens")
    @classmethod
    def _positive(cls, values: Any, info) -> Any:
        for v in values if isinstance(values, list) else []:
            if v is not None and v < 1:
                raise ValueError(f"space.{info.field_name} values must be >= 1, got {v}")
        return values

    @field_validator("prefill_decode_ratio")
    @classmethod
    def _ratios(cls, values: list[str]) -> list[str]:
        for v in values:
            parse_ratio(v)
        return values


def parse_ratio(text: str) -> tuple[int, int]:
    """'1:2' -> (1, 2); anything else raises naming the expected form."""
    p, sep, d = str(text).partition(":")
    if not sep or not p.strip().isdigit() or not d.strip().isdigit() or int(p) < 1 or int(d) < 1:
        raise ValueError(f"prefill_decode_ratio must look like P:D with positive integers (e.g. 1:2), got {text!r}")
    return int(p), int(d)


class GoodputConfig(BaseModel):
    """How the highest rate meeting the SLOs is found (DistServe-style bisection)."""

    model_config = _STRICT
    target: float = Field(0.9, gt=0, le=1)
    """Share of requests that must meet both SLOs (DistServe: 90%)."""
    rel_tol: float = Field(0.05, gt=0, lt=1)
    """Stop bisecting when the bracket (low passing, high failing rate) is narrower than rel_tol x high."""
    max_probes: int = Field(12, ge=2)
    """Most simulations per bisection."""
    num_requests: int = Field(1000, ge=10)
    """Fewest requests per probe simulation (a trace's first rows; a generator's first requests)."""
    min_duration_s: float = Field(60.0, ge=0)
    """Probes last at least this long in arrival time (more requests at higher rates), so that a
    burst absorbed by an empty system is not mistaken for a sustainable rate."""


class TrafficConfig(BaseModel):
    """The traffic a deployment must serve."""

    model_config = _STRICT
    rate_per_s: float | None = Field(None, gt=0)
    """Required request rate, req/s (the `cost` objective needs it)."""


class SearchConfig(BaseModel):
    """What is optimised and how much is simulated."""

    model_config = _STRICT
    objective: Literal["cost", "goodput_per_gpu", "goodput_per_dollar"] = "cost"
    """cost: cheapest deployment serving traffic.rate_per_s; goodput_per_gpu / goodput_per_dollar: highest."""
    keep_ratio: float = Field(0.25, ge=0, le=1)
    """Simulate candidates whose static estimate is at least keep_ratio x the best one (0 = all that fit);
    static estimates miss real goodput by up to 3-4x on some GPUs, so keep this loose."""
    max_simulated: int | None = Field(None, ge=1)
    """Simulate at most this many candidates, best static estimates first (None = no cap)."""
    wave_size: int = Field(8, ge=1)
    """Candidates bisected together; the incumbent that prunes by early stopping is updated between waves,
    so results do not depend on the executor or the number of workers."""
    early_stop: bool = True
    """Stop a bisection as soon as the candidate provably cannot beat the incumbent."""


class MixBucket(BaseModel):
    """One class of requests of a traffic mix (Mélange buckets)."""

    model_config = _STRICT
    name: str
    """Label of the bucket."""
    share: float = Field(gt=0)
    """Share of the total rate (shares are normalised)."""
    prompt_tokens: int | list[int] = 512
    """Prompt length: fixed, or [low, high] uniform."""
    output_tokens: int | list[int] = 128
    """Output length: fixed, or [low, high] uniform."""

    @model_validator(mode="after")
    def _lengths(self) -> "MixBucket":
        # checked here, not first by the workload of a planned run (which came after the plan's
        # cache file was made)
        for name in ("prompt_tokens", "output_tokens"):
            v = getattr(self, name)
            if isinstance(v, list) and len(v) != 2:
                raise ValueError(f"{name} must be an integer or [low, high], got {v}")
            check_int_spec(name, v if isinstance(v, int) else tuple(v), 1)
        return self


class MixConfig(BaseModel):
    """Cheapest heterogeneous mix of the space's candidates for a traffic mix (an integer program)."""

    model_config = _STRICT
    rate_per_s: float = Field(gt=0)
    """Total request rate, req/s."""
    buckets: list[MixBucket] = Field(min_length=1)
    """Request classes with their shares of the rate."""
    slice_factor: int = Field(4, ge=1)
    """Each bucket's rate is cut into this many equal slices, each assigned to one GPU type."""


class PlanConfig(BaseModel):
    """A plan: the base scenario, what to vary and what to optimise."""

    model_config = _STRICT
    scenario: str | dict[str, Any] | None = None
    """Base scenario: a YAML path (relative to the plan file) or an inline mapping; None = the default."""
    slo: dict[str, float] | None = None
    """SLO override ({ttft_s, tpot_s}); default: the base scenario's slo."""
    space: SpaceConfig = SpaceConfig()
    """The search space."""
    goodput: GoodputConfig = GoodputConfig()
    """Goodput bisection settings."""
    traffic: TrafficConfig = TrafficConfig()
    """The traffic to serve."""
    search: SearchConfig = SearchConfig()
    """Objective, pruning and early stopping."""
    mix: MixConfig | None = None
    """Also plan a heterogeneous mix of GPU types (Mélange)."""


@dataclass(frozen=True)
class Candidate:
    """One configuration to evaluate; `replicas` None means as many as the traffic needs."""

    gpu: str
    price_usd_h: float | None
    tp: int
    pp: int
    expert_parallel: bool
    dtype: str
    mode: str
    prefill_decode_ratio: str | None
    replicas: int | None
    max_num_seqs: int | None
    max_num_batched_tokens: int | None
    enable_chunked_prefill: bool
    scheduler: str
    router: str

    @property
    def gpus_per_replica(self) -> int:
        return self.tp * self.pp

    @property
    def label(self) -> str:
        parts = [f"{self.gpu} tp{self.tp}"]
        if self.pp > 1:
            parts[0] += f" pp{self.pp}"
        if self.expert_parallel:
            parts.append("ep")
        if self.dtype != "bf16":
            parts.append(self.dtype)
        if self.mode == "disaggregated":
            parts.append(f"pd {self.prefill_decode_ratio}")
        if self.replicas is not None:
            parts.append(f"x{self.replicas}")
        for name, value in (("seqs", self.max_num_seqs), ("tokens", self.max_num_batched_tokens)):
            if value is not None:
                parts.append(f"{name}={value}")
        if not self.enable_chunked_prefill:
            parts.append("no-chunk")
        parts.append(self.scheduler)
        if self.replicas != 1:
            parts.append(self.router)
        return " ".join(parts)


def expand(space: SpaceConfig) -> list[Candidate]:
    """The cross product of the space, in a fixed order; rejects what cannot be simulated yet."""
    if "disaggregated" in space.mode:
        raise InputError("space.mode: disaggregated is not yet supported (it needs prefill/decode pools); "
                         "allowed: aggregated")
    if any(pp != 1 for pp in space.pp):
        raise InputError("space.pp: pipeline parallelism is not yet simulated (one batch in flight per replica); "
                         "allowed: 1")
    replicas = [None] if space.replicas == "auto" else space.replicas
    combos = itertools.product(space.gpu, space.tp, space.pp, space.expert_parallel, space.dtype, space.mode,
                               replicas, space.max_num_seqs, space.max_num_batched_tokens,
                               space.enable_chunked_prefill, space.scheduler, space.router)
    out = []
    for gpu, tp, pp, ep, dtype, mode, n, seqs, tokens, chunked, sched, router in combos:
        ratio = space.prefill_decode_ratio if mode == "disaggregated" else [None]
        for r in ratio:
            out.append(Candidate(gpu.name, gpu.price_usd_h, tp, pp, ep, dtype, mode, r, n, seqs, tokens, chunked,
                                 sched, router))
    if not out:
        raise InputError("the search space is empty: every space key needs at least one value")
    if len({c.label for c in out}) != len(out):
        raise InputError("the search space lists a value twice; each value may appear once per key")
    return out
