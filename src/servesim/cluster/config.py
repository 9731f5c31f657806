"""The cluster's part of a scenario: replicas, pools, the router and failures.

A scenario without any of these is one replica, as before. `replicas: 8` makes eight
identical replicas of the top-level model/gpu/tp/engine/scheduler; `pools:` lists groups
that differ (GPU, parallelism, engine settings, scheduler, or model: a request that names a
model is routed only to pools serving it).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from servesim.cluster.coldstart import ColdStartConfig
from servesim.errors import InputError

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)
#: Most replicas a pool, a scenario or an autoscaler may ask for: each is a whole engine built at
#: the start (10,000 take about 3 s and 250 MB before the first request), and a count beyond it
#: is a typo more often than a cluster.
MAX_REPLICAS = 10_000


class RouterConfig(BaseModel):
    """The routing policy by name, with its own parameters beside the name."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    name: str = "round-robin"
    """Registered router name (see `servesim catalog routers`)."""
    refresh_interval_s: float = Field(0.0, ge=0)
    """How often routers see fresh replica metrics (running, waiting, KV usage, in-flight
    counts); between refreshes they see the values of the last one. 0 = live."""

    @model_validator(mode="before")
    @classmethod
    def _short(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data  # `router: least-requests`

    @model_validator(mode="after")
    def _check_params(self) -> "RouterConfig":
        self.params()  # raises on an unknown router or bad parameters
        return self

    def params(self):
        from servesim.cluster.routers import get_router
        from servesim.scenario import _one_line

        cls = get_router(self.name)
        try:
            return cls.Params(**(self.model_extra or {}))
        except ValidationError as e:
            raise InputError(_one_line(e, prefix="router.", allowed_from=cls.Params)) from None


class PoolConfig(BaseModel):
    """A group of identical replicas. Unset fields take the scenario's top-level values."""

    model_config = _STRICT

    name: str
    """Pool name (shown in summaries and reports)."""
    replicas: int = Field(1, ge=1, le=MAX_REPLICAS)
    """Number of replicas in the pool."""
    model: str | None = None
    """Model served (catalogue name or config.json path); default: the scenario's `model`."""
    gpu: str | None = None
    """GPU type; default: the scenario's `gpu`."""
    tp: int | None = Field(None, ge=1)
    """Tensor-parallel size; default: the scenario's `tp`."""
    dtype: str | None = None
    """Weight precision; default: the scenario's `dtype`."""
    engine: dict[str, Any] = {}
    """Engine arguments that differ from the scenario's `engine` section (vLLM names)."""
    scheduler: dict[str, Any] | str | None = None
    """Scheduler of this pool (name and parameters); default: the scenario's `scheduler`."""
    mtbf_s: float | None = Field(None, gt=0)
    """Mean time between failures of each replica (exponential); unset: no random failures."""
    mttr_s: float = Field(300.0, ge=0)
    """Time a failed replica takes to come back (restart with an empty KV cache)."""
    role: Literal["mixed", "prefill", "decode"] = "mixed"
    """Phase served: `mixed` (both, the default), `prefill` (prompts only: each request's KV
    then moves to a decode replica) or `decode` (requests arrive with their KV computed)."""
    gpus_per_node: int = Field(8, ge=1)
    """GPUs per node: replicas are packed on nodes in order, which decides the link (NVLink
    within a node, the network between nodes) their KV transfers use."""


class Crash(BaseModel):
    """One replica failure at a given time."""

    model_config = _STRICT

    replica: int = Field(ge=0)
    """Replica index in the cluster (pools in order, replicas numbered from 0)."""
    at_s: float = Field(ge=0)
    """Simulated time of the crash."""
    recovery_s: float | None = Field(300.0, ge=0)
    """Time until the replica serves again (null: it never comes back)."""
    warning_s: float = Field(0.0, ge=0)
    """Notice before the crash (a spot instance's preemption notice, a failing health check):
    from then on the replica takes no new request and, with `migration.enabled`, migrates its
    running requests out (Llumnix). 0: no notice."""


class FaultsConfig(BaseModel):
    """Replica failures: scheduled crashes, plus random ones from each pool's `mtbf_s`."""

    model_config = _STRICT

    crashes: list[Crash] = []
    """Crashes at given times."""


class AutoscalerConfig(BaseModel):
    """Scale a pool (or several) with load: the policy by name with its parameters beside the name, the
    bounds, the decision loop and the cold start a new replica pays."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    name: str = "hpa"
    """Registered autoscaler name (see `servesim catalog autoscalers`)."""
    pool: str | list[str] | None = None
    """Pool to scale (default: the first pool, or the top-level replicas); a list scales each
    of its pools by a decision loop of its own with this policy and parameters (Dynamo's
    planner sizes its prefill and its decode workers together, each by its own capacity)."""
    min_replicas: int | dict[str, int] = 1
    """Fewest replicas (0 = scale to zero: requests wait at the cluster for a cold start); with
    several pools, one count for each or a count per pool (`{prefill: 1, decode: 2}`)."""
    max_replicas: int | dict[str, int] = 4
    """Most replicas; with several pools, one count for each or a count per pool."""
    interval_s: float | None = Field(None, gt=0)
    """Decision interval; default: the policy's reference value (HPA 15 s, KPA 2 s, ...)."""
    scrape_delay_s: float = Field(0.0, ge=0)
    """Age of the metrics a decision sees (scrape interval plus pipeline lag)."""
    scale_down: Literal["drain", "evict", "migrate"] = "drain"
    """drain: the replica takes no new request and finishes what it holds; evict: its
    requests are recomputed elsewhere at once (the crash path, without the failure); migrate:
    drain, and its decoding requests are live-migrated out to the freest replicas (Llumnix's
    scale-in; needs migration.enabled), so it stops sooner without recomputing anything."""
    cold_start: ColdStartConfig = ColdStartConfig()
    """Time a new replica takes to serve, part by part."""
    price_usd_h: float | None = Field(None, ge=0)
    """Price per GPU-hour for the cost report; default: the GPU catalogue's dated price."""

    @field_validator("min_replicas", "max_replicas")
    @classmethod
    def _counts(cls, v: int | dict[str, int], info) -> int | dict[str, int]:
        lo, hi = (0, MAX_REPLICAS) if info.field_name == "min_replicas" else (1, MAX_REPLICAS)
        for n in (v.values() if isinstance(v, dict) else (v,)):
            if not lo <= n <= hi:  # (the message adds a lone value itself: "(got 0)")
                bound = f"greater than or equal to {lo}" if n < lo else f"less than or equal to {hi}"
                raise ValueError(f"Input should be {bound}" + (f" (got {n})" if isinstance(v, dict) else ""))
        return v

    @model_validator(mode="after")
    def _check(self) -> "AutoscalerConfig":
        if isinstance(self.pool, list) and (not self.pool or len(set(self.pool)) < len(self.pool)):
            raise ValueError(f"pool {self.pool}: a list names each pool to scale once, and at least one")
        self.params()
        return self

    def pool_names(self, names: list[str]) -> list[str]:
        """The pools scaled, of a scenario whose pools are `names` in order."""
        return list(self.pool) if isinstance(self.pool, list) else [self.pool or names[0]]

    def bounds(self, pool: str) -> tuple[int, int]:
        """(min_replicas, max_replicas) of a scaled pool (the scenario checked that a mapping names it)."""
        lo, hi = self.min_replicas, self.max_replicas
        return (lo if isinstance(lo, int) else lo[pool]), (hi if isinstance(hi, int) else hi[pool])

    def params(self):
        from servesim.cluster.autoscalers import get_autoscaler
        from servesim.scenario import _one_line

        cls = get_autoscaler(self.name)
        extra = {k: v for k, v in (self.model_extra or {}).items()}
        try:
            return cls.Params(**extra)
        except ValidationError as e:
            raise InputError(_one_line(e, prefix="autoscaler.", allowed_from=cls.Params)) from None


class PowerConfig(BaseModel):
    """GPU power: a static cap per GPU, and POLCA-style row power management (a budget for
    all servers, with clock caps when the row draws too much). Setting this section adds
    the `elastic` summary section (energy, GPU-hours, cost) and power columns."""

    model_config = _STRICT

    gpu_power_cap_w: float | None = Field(None, gt=0)
    """Static power cap per GPU (nvidia-smi -pl); the clock runs at the ratio whose peak power
    meets it. Must lie between the GPU's idle power and its TDP."""
    frequency_exponent: float = Field(2.5, ge=1, le=4)
    """gamma in P = P_idle + (P_phase - P_idle) x f^gamma (voltage-frequency scaling, 2-3;
    shared/specs/cluster.md §7.1)."""
    row_power_budget_w: float | None = Field(None, gt=0)
    """POLCA: provisioned power of the row (all replicas' GPUs); unset: no row management."""
    control_period_s: float = Field(2.0, gt=0)
    """POLCA: how often row power is read and caps are set."""
    telemetry_window_s: float = Field(10.0, gt=0)
    """POLCA: the row meter averages the readings of this long a window (power telemetry is
    averaged, not instantaneous; our choice, a parameter)."""
    threshold_low: float = Field(0.85, gt=0, le=1)
    """POLCA T1: above this share of the budget, lock clocks to `clock_low`."""
    threshold_high: float = Field(0.95, gt=0, le=1.5)
    """POLCA T2: above this share, brake every server to `clock_brake`."""
    hysteresis: float = Field(0.05, ge=0, lt=1)
    """Release caps only below (T1 - hysteresis) of the budget."""
    clock_low: float = Field(0.8, gt=0, le=1)
    """Clock ratio of the first capping level (placeholder to calibrate, as POLCA's thresholds)."""
    clock_brake: float = Field(0.6, gt=0, le=1)
    """Clock ratio of the power brake."""
    price_usd_h: float | None = Field(None, ge=0)
    """Price per GPU-hour for the cost report (default: the catalogue's dated price)."""

    @model_validator(mode="after")
    def _order(self) -> "PowerConfig":
        if self.threshold_low >= self.threshold_high:
            raise ValueError(f"threshold_low ({self.threshold_low}) must be below "
                             f"threshold_high ({self.threshold_high})")
        return self


class DisaggregationConfig(BaseModel):
    """How requests move from prefill pools to decode pools (used when a pool has role prefill)."""

    model_config = _STRICT

    decode_router: RouterConfig = Field(default_factory=RouterConfig)
    """Picks the decode replica of each request (any router; it sees only decode replicas).
    The top-level `router` picks among prefill and mixed replicas."""
    first_token: Literal["prefill", "decode"] = "prefill"
    """Who emits the first token: `prefill` (DistServe, Splitwise, Mooncake, SGLang: the prefill
    instance samples it and TTFT does not wait for the transfer) or `decode` (vLLM's
    disaggregated proxy with NixlConnector, llm-d: the prefill request has max_tokens 1 whose
    token is dropped; the decode side recomputes the last prompt token and samples it)."""
    conditional: Literal["off", "dynamo", "llm-d"] = "off"
    """Prefill on the decode replica when the prompt's uncached part is short. The decode
    replica is chosen first (decode router) and its prefix cache decides: `dynamo` prefills
    remotely iff uncached tokens > `max_local_prefill_length` (Dynamo DisaggregatedRouter);
    `llm-d` iff uncached tokens >= `non_cached_tokens` (llm-d prefix-based P/D decider).
    `off`: every request routed to a prefill replica is disaggregated."""
    max_local_prefill_length: int = Field(1000, ge=0)
    """Dynamo's threshold (its DisaggRouterConf default: 1000 tokens)."""
    non_cached_tokens: int = Field(0, ge=0)
    """llm-d's threshold (servesim default 0: always disaggregate, as llm-d's AlwaysDisagg
    decider; the value deployments set is workload-specific)."""
    rejection: Literal["off", "decode", "early", "predictive"] = "off"
    """Mooncake's overload admission (arXiv v3 §7), judged on predicted SLO loads (prefill:
    estimated TTFT / `ttft_slo_s`; decode: predicted TBT / `tbt_slo_s`): `decode` rejects at
    each stage on its own (at arrival if the prefill load is >= 1, after the prefill if the
    decode load is then >= 1, wasting that prefill); `early` admits at arrival iff both loads,
    the decode one as it is now, are < 1; `predictive` iff both are <= 1 with the decode load
    predicted for when the prefill ends (each decode assumed to last `decode_time_s`)."""
    ttft_slo_s: float = Field(30.0, gt=0)
    """TTFT threshold of the rejection rule (Mooncake FAST'25 evaluation: 30 s)."""
    tbt_slo_s: float = Field(0.1, gt=0)
    """TBT threshold of the rejection rule (Mooncake FAST'25 thresholds I/II/III: 0.1/0.2/0.3 s)."""
    decode_time_s: float = Field(10.0, gt=0)
    """`predictive`: the uniform decode time t_d assumed for every request (Mooncake publishes
    no value; servesim's choice, set it near the workload's mean decode time)."""
    overflow: Literal["off", "splitwise"] = "off"
    """Mixed pools: `off` (the router picks among prefill and mixed replicas alike) or
    `splitwise` (Splitwise's mixed pool absorbs bursts: a request goes to the prefill pool
    unless every prefill replica is over `prompt_max_pending_batch_tokens`, or every decode
    replica lacks KV memory for it; then a mixed replica serves it whole)."""
    prompt_max_pending_batch_tokens: int = Field(8192, ge=1)
    """Splitwise's prompt-machine limit (splitwise-sim `MixedPoolScheduler` default 8192): a
    prefill replica with pending prompt tokens is overloaded when they plus the new prompt
    exceed it."""

    @model_validator(mode="before")
    @classmethod
    def _yaml_off(cls, data: Any) -> Any:
        # YAML 1.1 reads a bare `off` as false (`conditional: off`, `--set ...=off`)
        if isinstance(data, dict):
            data = {k: "off" if v is False and k in ("conditional", "rejection", "overflow") else v
                    for k, v in data.items()}
        return data


class MigrationConfig(BaseModel):
    """Llumnix live migration between replicas (off unless `enabled`). Names and defaults are
    Llumnix's (initial open-source release; HEAD differences noted)."""

    model_config = _STRICT

    enabled: bool = False
    """Migrate running requests from loaded replicas to free ones."""
    polling_interval_s: float = Field(0.05, gt=0)
    """How often the global scheduler checks loads and pairs replicas (`polling_interval`)."""
    migrate_out_threshold: float = 3.0
    """A replica whose freeness (available blocks per request, the HOL request's demand counted)
    is below this migrates out, one above it migrates in (Llumnix negates it internally to -3)."""
    last_stage_max_blocks: int = Field(4, ge=1)
    """The stop-and-copy stage starts once at most this many blocks are left to copy (HEAD: 16)."""
    max_stages: int = Field(3, ge=1)
    """Copy stages before giving up (the migration is aborted, the request stays)."""
    bandwidth_GBps: float = Field(10.0, gt=0)
    """Migration copy bandwidth (Llumnix's gloo/rpc backends stage through CPU buffers; the paper
    sweeps 1, 10 and 25 GB/s)."""
    latency_s: float = Field(1e-3, ge=0)
    """Fixed cost per stage (RPC and commit)."""
    block_size: int = Field(16, ge=1)
    """KV block size used for the load metric (the engine's `block_size`)."""
    watermark: float = Field(0.01, ge=0, lt=1)
    """Share of blocks not counted as available (vLLM's watermark)."""
