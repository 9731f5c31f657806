"""The serving front end: the API server between the client and the engine.

A request's way in passes through one API-server process (vLLM's `api_server`, SGLang's
`TokenizerManager`, TensorRT-LLM's `trtllm-serve`): HTTP parsing, chat template and tokenization
run there one request at a time, so when hundreds of requests arrive together the process admits
them at its own rate. Then it hands the request to the engine, and the first streamed chunk
travels back through it. TTFT as the client measures it is therefore

    front-end queue + front-end service + hand-off/delivery latency + engine queue + prefill.

Model (a single-server FIFO queue plus a fixed latency):

    service_s = request_s + prompt_token_s * prompt_tokens      (serial: one process)
    engine sees the request at  max(arrival, previous service end) + service_s + latency_s

With `time_cv > 0` each request's service and latency are scaled by one factor drawn from a gamma
distribution of mean 1 and that coefficient of variation (seeded by the scenario): a real API
server's per-request time varies (HTTP, tokenizer, event-loop scheduling, detokenisation of
the other streams), which keeps a closed loop's users from staying in lock-step. The gamma keeps
times positive and the mean equal to the constant; its spread is a fitted constant (docs/fidelity-history.md).

Per-output-token work (detokenization, streaming) costs nothing by default: in most measured
engines it overlaps the GPU step and its effect on step time belongs to the engine constants.
`output_token_s > 0` puts it in the same serial process: each step's tokens take that much of the
process per token before they reach the client, in one FIFO with the admissions (a request
arriving queues behind the tokens already accepted, tokens made later behind its admission). Once the tokens the users' closed loop asks for exceed `1 / output_token_s` a second,
the process bounds the served token rate whatever the GPUs do, and the wait shows in the TTFT
(docs/fidelity-history.md, "TensorRT-LLM H100 1.0.0rc3: a token-rate ceiling").
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from servesim.perf._catalog import catalogue, resolve

FRONTEND_FILE = "frontend.yaml"


def frontend_profile(engine: str, gpu: str, version: str = "") -> str:
    """The front-end profile name of an engine (release) on one system: `<engine>@<gpu>` or
    `<engine>@<gpu>@<version>` (the key scheme of frontend.yaml)."""
    return f"{engine}@{gpu}@{version}" if version else f"{engine}@{gpu}"


def profile_name(engine: str, gpu: str = "", version: str = "") -> str:
    """The most specific front-end profile of frontend.yaml for an engine release on one system:
    `<engine>@<gpu>@<version>`, else `<engine>@<gpu>`, else `<engine>` (the API server's cost
    depends on the host CPU of each system and on the release's server code)."""
    names = catalogue(FRONTEND_FILE)
    candidates = ([frontend_profile(engine, gpu, version)] if gpu and version else []) + \
        ([frontend_profile(engine, gpu)] if gpu else [])
    return next((c.lower() for c in candidates if c.lower() in names), engine.lower())


class FrontendConfig(BaseModel):
    """Cost of the API server in front of the engine (TTFT as clients measure it)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    profile: str = "none"
    """Front-end constants from perf/data/frontend.yaml: by engine (`vllm`, `sglang`, `trtllm`), by
    engine and system (`vllm@h100-sxm`) or engine, system and release (`vllm@h100-sxm@0.18.0`), or
    `none`: requests reach the engine the instant they arrive (servesim's behaviour before the
    front-end model). The fields below, when set, override the profile's values."""
    request_s: float | None = Field(None, ge=0)
    """Serial API-server time per request, s (HTTP parsing, chat template, request set-up)."""
    prompt_token_s: float | None = Field(None, ge=0)
    """Serial API-server time per prompt token, s (tokenization)."""
    latency_s: float | None = Field(None, ge=0)
    """Fixed non-serial time on the path, s (hand-off to the engine process and delivery of the
    first streamed chunk back to the client)."""
    output_token_s: float | None = Field(None, ge=0)
    """Serial API-server time per streamed output token, s (detokenization, response framing); 0:
    none. Each step's tokens reach the client when the process has done them (the engine then
    steps one by one: the process's time depends on every step's tokens)."""
    time_cv: float = Field(0.0, ge=0, le=10)
    """Coefficient of variation of each request's front-end time: its service and latency are
    scaled by one gamma-distributed factor of mean 1 (0: every request takes the constants exactly,
    as before). Breaks the lock-step of a closed loop's users; seeded by the scenario's seed."""

    @model_validator(mode="after")
    def _known_profile(self) -> FrontendConfig:
        if self.profile.strip().lower() != "none":
            resolve(FRONTEND_FILE, "frontend profile", self.profile)  # raises naming the allowed ones
        return self

    def _values(self) -> dict[str, float]:
        """Every constant after applying the profile and the overrides (0 where neither sets it)."""
        base = dict.fromkeys(("request_s", "prompt_token_s", "latency_s", "output_token_s"), 0.0)
        if self.profile.strip().lower() != "none":
            _, entry = resolve(FRONTEND_FILE, "frontend profile", self.profile)
            base.update({k: float(entry[k]) for k in base if k in entry})
        for key in base:
            value = getattr(self, key)
            if value is not None:
                base[key] = float(value)
        return base

    def constants(self) -> tuple[float, float, float]:
        """(request_s, prompt_token_s, latency_s) after applying the profile and the overrides."""
        v = self._values()
        return v["request_s"], v["prompt_token_s"], v["latency_s"]

    def token_s(self) -> float:
        """`output_token_s` after applying the profile and the override (0 when neither sets it)."""
        return self._values()["output_token_s"]

    @property
    def active(self) -> bool:
        return any(v > 0 for v in self._values().values())


class FrontEnd:
    """One API-server process: a FIFO single server in virtual time (no I/O, no clock)."""

    def __init__(self, config: FrontendConfig, rng: np.random.Generator | None = None):
        if config.time_cv > 0 and rng is None:
            raise ValueError("a front end with time_cv > 0 needs a seeded generator")
        self.config = config
        self.rng = rng
        self.request_s, self.prompt_token_s, self.latency_s = config.constants()
        self.output_token_s = config.token_s()
        self._free_s = 0.0  # when the process finishes the work it has already accepted

    def _factor(self) -> float:
        """This request's time factor: 1, or a gamma draw of mean 1 and CV time_cv."""
        cv = self.config.time_cv
        if cv <= 0:
            return 1.0
        return float(self.rng.gamma(1.0 / (cv * cv), cv * cv))

    def engine_arrival_s(self, now_s: float, prompt_tokens: int) -> float:
        """Accept a request arriving at `now_s`; return when the engine receives it."""
        factor = self._factor()
        start_s = max(now_s, self._free_s)
        self._free_s = start_s + factor * (self.request_s + self.prompt_token_s * prompt_tokens)
        return self._free_s + factor * self.latency_s

    @property
    def free_s(self) -> float:
        """When the process has done the work it has accepted so far."""
        return self._free_s

    def deliver_s(self, now_s: float, num_tokens: int) -> float:
        """Stream `num_tokens` tokens a step made at `now_s`; return when the last reaches the client
        (after the work the process had already accepted: admissions and earlier steps' tokens)."""
        self._free_s = max(now_s, self._free_s) + num_tokens * self.output_token_s
        return self._free_s
