"""The scenario: everything a run needs, as one validated YAML document.

Top-level short keys hold what users change most (`model`, `gpu`, `tp`, `dtype`, `seed`);
sections hold the engine arguments (vLLM names), the scheduler and its parameters, the
workload, SLOs and outputs. Every field has a default and a docstring; `servesim run --help`
prints them. Loading turns every problem into one `InputError` line.
"""

from __future__ import annotations

import re

from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from servesim.cluster.config import (MAX_REPLICAS, AutoscalerConfig, DisaggregationConfig, FaultsConfig,
                                     MigrationConfig, PoolConfig, PowerConfig, RouterConfig)
from servesim.cluster.kv_store import KVStoreConfig
from servesim.cluster.network import NetworkConfig
from servesim.errors import InputError
from servesim.perf import PerfConfig
from servesim.replica.config import EngineConfig
from servesim.replica.frontend import FrontendConfig
from servesim.replica.schedulers import SchedulerParams, get_scheduler
from servesim.workload.config import WorkloadConfig

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)


class SchedulerConfig(BaseModel):
    """The scheduling policy by name, with its own parameters beside the name."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    name: str = "vllm"
    """Registered scheduler name (see `servesim catalog schedulers`)."""

    @model_validator(mode="before")
    @classmethod
    def _short(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data  # `scheduler: sarathi`

    @model_validator(mode="after")
    def _check_params(self) -> "SchedulerConfig":
        self.params()  # raises on unknown scheduler or bad parameters
        return self

    def params(self) -> SchedulerParams:
        cls = get_scheduler(self.name)
        try:
            return cls.Params(**(self.model_extra or {}))
        except ValidationError as e:
            raise InputError(_one_line(e, prefix="scheduler.", allowed_from=cls.Params)) from None


class SLOConfig(BaseModel):
    model_config = _STRICT
    ttft_s: float | None = Field(None, gt=0)
    """Time-to-first-token target in seconds (unset: no TTFT SLO)."""
    tpot_s: float | None = Field(None, gt=0)
    """Time-per-output-token target in seconds (unset: no TPOT SLO)."""


class OutputConfig(BaseModel):
    model_config = _STRICT
    requests_format: Literal["csv", "parquet"] = "csv"
    """Format of the per-request table (`parquet` needs pyarrow)."""
    timeseries_interval_s: float = Field(1.0, gt=0)
    """Interval of the time series in seconds."""


class Scenario(BaseModel):
    """One simulation run."""

    model_config = _STRICT

    seed: int = Field(0, ge=0)
    """Root random seed (>= 0); every random component derives its own stream from it."""
    model: str = "llama-3.1-8b"
    """Model name from the catalogue, or a path to a Hugging Face config.json."""
    gpu: str = "h100-sxm"
    """GPU name from the catalogue."""
    tp: int = Field(1, ge=1)
    """Tensor-parallel size (GPUs per replica)."""
    dtype: str = "bf16"
    """Weight precision (bf16, fp16, fp8, int4, ...)."""
    perf: PerfConfig = PerfConfig()
    """Performance-model options: engine profile and calibration."""
    engine: EngineConfig = EngineConfig()
    """Engine arguments (vLLM names and defaults)."""
    scheduler: SchedulerConfig = SchedulerConfig()
    """Scheduling policy and its parameters."""
    frontend: FrontendConfig = FrontendConfig()
    """The API server in front of the engine (default none: requests reach the engine at once)."""
    workload: WorkloadConfig = WorkloadConfig()
    """Where requests come from."""
    slo: SLOConfig = SLOConfig()
    """Latency targets for SLO attainment and goodput."""
    output: OutputConfig = OutputConfig()
    """What the run writes."""
    max_sim_time_s: float | None = Field(None, gt=0)
    """Stop the simulation at this simulated time; unfinished requests are dropped."""
    replicas: int = Field(1, ge=1, le=MAX_REPLICAS)
    """Identical replicas of this model/GPU/engine behind the router (see `pools` for mixes)."""
    router: RouterConfig = Field(default_factory=RouterConfig)
    """How requests are spread over replicas, and how fresh the router's view of them is."""
    pools: list[PoolConfig] | None = None
    """Groups of replicas that differ (GPU, parallelism, engine, scheduler, model); replaces
    `replicas`. Unset fields of a pool take the top-level values."""
    faults: FaultsConfig = FaultsConfig()
    """Replica failures: their requests are re-routed and recomputed, or fail if none is left."""
    autoscaler: AutoscalerConfig | None = None
    """Scale a pool with load (replicas start with a cold start and drain to stop); unset:
    a fixed cluster. See docs/elastic.md."""
    power: PowerConfig | None = None
    """GPU power caps and POLCA row power management; adds energy and cost reports."""
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    """Links between replicas (KV transfers of disaggregated pools)."""
    disaggregation: DisaggregationConfig = Field(default_factory=DisaggregationConfig)
    """Decode router and options of prefill/decode disaggregation (pools with role prefill/decode)."""
    migration: MigrationConfig = Field(default_factory=MigrationConfig)
    """Live migration of running requests between replicas (Llumnix)."""
    kv_store: KVStoreConfig = Field(default_factory=KVStoreConfig)
    """A KV store in CPU memory and on disk that keeps computed prompt prefixes for reuse
    (LMCache, Mooncake store); off unless enabled. See docs/disaggregation.md."""

    @field_validator("replicas", mode="before")
    @classmethod
    def _unset_replicas(cls, v):
        # (`--set replicas=null` unsets a file's count, as for the optional sections, e.g. to size pools instead)
        return 1 if v is None else v

    @model_validator(mode="after")
    def _cross_checks(self) -> "Scenario":
        # (in this order: the first broken rule is the one reported)
        if self.pools is not None:
            self._check_pools()
        if self.autoscaler is not None:
            self._check_autoscaler()
        self._check_combinations()
        return self

    def _check_pools(self) -> None:
        if self.replicas != 1:
            raise ValueError(f"give either `replicas` ({self.replicas}) or `pools`, not both: size each pool "
                             "with its own `replicas` (`--set replicas=null` unsets a file's count)")
        if not self.pools:
            raise ValueError("pools: list at least one pool")
        names = [p.name for p in self.pools]
        if len(set(names)) != len(names):
            raise ValueError(f"pool names must be unique (got {', '.join(names)})")
        self._check_roles()

    def _check_autoscaler(self) -> None:
        """The scaled pools exist, their bounds hold their starting counts, and the policy suits their roles."""
        a = self.autoscaler
        names = [p.name for p in self.pools] if self.pools else ["default"]
        roles = {p.name: p.role for p in self.pools or []}
        scaled = a.pool_names(names)
        for key in ("min_replicas", "max_replicas"):  # (a count per pool names exactly the scaled ones)
            counts = getattr(a, key)
            if isinstance(counts, dict) and set(counts) != set(scaled):
                raise ValueError(f"autoscaler.{key}: a count per pool names each scaled pool once "
                                 f"(got {', '.join(counts) or 'none'}; scaled: {', '.join(scaled)})")
        for pool in scaled:
            if pool not in names:
                raise ValueError(f"autoscaler.pool: no pool '{pool}' (pools: {', '.join(names)})")
            lo, hi = a.bounds(pool)
            if lo == 0 and any(r != "mixed" for r in roles.values()):
                raise ValueError(f"autoscaler ({a.name}): min_replicas 0 scales to zero only without prefill/decode "
                                 "pools (a request's prefill and decode must each find a replica); allowed: 1 or more")
            if lo > hi:
                raise ValueError(f"autoscaler: pool '{pool}': min_replicas ({lo}) is above max_replicas ({hi})")
            start = next(p.replicas for p in self.pools if p.name == pool) if self.pools else self.replicas
            if not lo <= start <= hi:
                raise ValueError(f"autoscaler: pool '{pool}' starts with {start} replicas, outside "
                                 f"[min_replicas {lo}, max_replicas {hi}]")
            if roles.get(pool) == "decode" and getattr(a.params(), "mode", None) == "load":
                raise ValueError(f"autoscaler ({a.name}): mode load sizes replicas by their queued prefill work, "
                                 f"which decode pool '{pool}' has none of; allowed on a decode pool: mode throughput")

    def _check_combinations(self) -> None:
        """Sections that work only together, or not together (migration, data parallelism,
        adapters, disaggregation's admission, the autoscaler's and crashes' drains)."""
        if self.migration.enabled and self.pools and any(p.role != "mixed" for p in self.pools):
            raise ValueError("migration.enabled works between mixed pools only (not with prefill/decode roles)")
        dp = self.perf.data_parallel_size
        if dp > 1 and self.pools and any(p.role != "mixed" for p in self.pools):
            raise ValueError(f"perf.data_parallel_size {dp}: attention data parallelism does not take KV hand-offs; "
                             "prefill/decode pools need data_parallel_size: 1 (or pools with role: mixed)")
        if dp > 1 and self.migration.enabled:
            raise ValueError(f"perf.data_parallel_size {dp}: live migration moves requests between single-rank "
                             "replicas; set migration.enabled: false (or data_parallel_size: 1)")
        if self.workload.attributes.loras.mix():
            if dp > 1:  # (each rank's requests were rejected at arrival, every one of them)
                raise ValueError(f"perf.data_parallel_size {dp}: LoRA adapters (workload.attributes.loras) are served "
                                 "by single-rank replicas only; set data_parallel_size: 1 (or no loras)")
            self._check_lora_schedulers()
        d = self.disaggregation
        if (d.rejection != "off" or d.overflow != "off") and not any(p.role == "prefill" for p in self.pools or []):
            which = "rejection" if d.rejection != "off" else "overflow"
            raise ValueError(f"disaggregation.{which} acts on prefill/decode pools; add pools with role: prefill "
                             f"and role: decode (or {which}: off)")
        if self.autoscaler is not None and self.autoscaler.scale_down == "migrate" and not self.migration.enabled:
            raise ValueError("autoscaler.scale_down: migrate drains the replica by live migration; set "
                             "migration.enabled: true (or scale_down: drain / evict)")
        if any(c.warning_s > 0 for c in self.faults.crashes) and not self.migration.enabled:
            raise ValueError("faults.crashes: warning_s drains the replica by migration; set migration.enabled: true "
                             "(or warning_s: 0)")
        n = self.num_replicas
        for c in self.faults.crashes:
            if c.replica >= n:
                raise ValueError(f"faults.crashes: replica {c.replica} does not exist (replicas 0-{n - 1})")

    def _check_lora_schedulers(self) -> None:
        """Adapters drawn by the workload need schedulers that serve them (vllm)."""
        from servesim.replica.schedulers import available, get_scheduler

        named = [("scheduler", self.scheduler)] + [
            (f"pools.{p.name}.scheduler", SchedulerConfig.model_validate(p.scheduler))
            for p in self.pools or [] if p.scheduler is not None]
        for where, cfg in named:
            if not get_scheduler(cfg.name).supports_lora:
                allowed = ", ".join(n for n in available() if get_scheduler(n).supports_lora)
                raise ValueError(f"{where}: {cfg.name} cannot serve LoRA adapters (workload.attributes.loras); "
                                 f"allowed: {allowed}")

    def _check_roles(self) -> None:
        """Every prefill pool needs a decode pool for its model, and every decode pool a
        prefill pool feeding it (or conditional disaggregation, which sends it short prompts)."""
        def model(p):
            return p.model or self.model

        prefill = {model(p) for p in self.pools if p.role == "prefill"}
        decode = {model(p) for p in self.pools if p.role == "decode"}
        for p in self.pools:
            if p.role == "prefill" and model(p) not in decode:
                raise ValueError(f"pools.{p.name}: a prefill pool needs a decode pool serving {model(p)} "
                                 "(role: decode) to send its KV to")
            if p.role == "decode" and model(p) not in prefill:
                raise ValueError(f"pools.{p.name}: a decode pool has no route from a prefill pool serving "
                                 f"{model(p)} (add a pool with role: prefill)")
            if (p.role == "decode" and self.disaggregation.first_token == "decode"
                    and self.pool_scheduler(p).name == "sglang"):
                # (SGLang's prefill server makes the first token and sends it with the KV; its
                # decode batches take only requests that have one)
                raise ValueError(f"pools.{p.name}: disaggregation.first_token decode: an sglang decode pool takes "
                                 "the first token from the prefill server; allowed: first_token prefill")

    def pool_scheduler(self, pool: PoolConfig) -> SchedulerConfig:
        """The scheduler a pool runs: its own, else the scenario's."""
        return self.scheduler if pool.scheduler is None else SchedulerConfig.model_validate(pool.scheduler)

    @property
    def num_replicas(self) -> int:
        return sum(p.replicas for p in self.pools) if self.pools else self.replicas


DEFAULT_SCENARIO = "default.yaml"


def default_scenario_text() -> str:
    return resources.files("servesim.scenarios").joinpath(DEFAULT_SCENARIO).read_text()


def load_scenario(path: str | Path | None = None, overrides: list[str] | None = None) -> Scenario:
    """Read a scenario file (or the packaged default), apply `key.path=value` overrides, validate."""
    if path is None:
        text, where = default_scenario_text(), "default scenario"
    else:
        text, where = read_scenario_text(Path(path)), str(path)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise InputError(f"{where}: malformed YAML{at}: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise InputError(f"{where}: a scenario must be a mapping of keys to values")
    for item in overrides or []:
        apply_override(data, item)
    return validate_scenario(data, where)


def read_scenario_text(path: Path) -> str:
    """The text of a scenario file, or one InputError line saying why it cannot be read."""
    if path.is_dir():
        raise InputError(f"scenario '{path}' is a folder; give a scenario YAML file (e.g. examples/azure-conv.yaml)")
    if not path.is_file():
        raise InputError(f"scenario file '{path}' does not exist")
    try:
        return path.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the YAML
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not a UTF-8 text file (byte {e.start} is 0x{e.object[e.start]:02x}); "
                         "a scenario is a YAML text file") from None
    except OSError as e:
        raise InputError(f"cannot read scenario file '{path}': {e.strerror or e}") from None


def validate_scenario(data: dict[str, Any], where: str = "scenario") -> Scenario:
    try:
        return Scenario.model_validate(data)
    except ValidationError as e:
        raise InputError(f"{where}: {_one_line(e, allowed_from=Scenario)}") from None


def apply_override(data: dict[str, Any], item: str) -> None:
    """Set `a.b.c=value` in nested dicts; the value is parsed as YAML (numbers, booleans, null)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise InputError(f"--set expects KEY=VALUE (e.g. engine.max_num_seqs=128), got '{item}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = {}
        elif isinstance(child, str):  # a section given by name only, e.g. `trace: azure-conv`
            child = {"name": child}
        elif not isinstance(child, dict):
            raise InputError(f"--set {key}: '{part}' is a value, not a section")
        node[part] = child
        node = child
    node[parts[-1]] = value


def _one_line(e: ValidationError, prefix: str = "", allowed_from: type[BaseModel] | None = None) -> str:
    """The first validation error as one readable line, naming allowed keys for unknown ones."""
    err = e.errors()[0]
    loc = (prefix + ".".join(str(x) for x in err["loc"] if not _union_tag(x))).rstrip(".")
    if err["type"] == "extra_forbidden":
        allowed = _fields_at(allowed_from, err["loc"][:-1]) if allowed_from else []
        return f"unknown field '{loc}'; allowed: {', '.join(allowed)}"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
    if loc and msg.startswith((f"{loc}.", f"{loc}:", f"unknown field '{loc}.")):
        return f"{msg}{shown}"  # (a section's own check named the field already: `SchedulerConfig.params`)
    return f"{loc}: {msg}{shown}" if loc else f"{msg}{shown}"  # (a whole-scenario check has no location)


_TYPE_TAG = re.compile(r"(int|float|str|bool|none|[a-z]+\[.*\]|function-[a-z]+\[.*\])")


def _union_tag(part: object) -> bool:
    """Whether a location part is pydantic's name for the member of a union that was tried
    (`LinkSpec` in `network.inter_node.LinkSpec.latency_s`, `int` in `sessions.turns.int`),
    which names no key of the scenario."""
    if not isinstance(part, str):
        return False
    return bool(_TYPE_TAG.fullmatch(part)) or part in {c.__name__ for c in _models(BaseModel)}


def _models(cls: type) -> list[type]:
    return [m for c in cls.__subclasses__() for m in (c, *_models(c))]


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)
