"""Turning a scenario's pools into replicas (perf model, engine settings, scheduler, KV cache)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from servesim.cluster.routers import get_router
from servesim.errors import InputError
from servesim.perf import build_perf_model
from servesim.replica.attention_dp import make_attention_dp_parts
from servesim.replica.config import EngineConfig, check_engine_limits, serve_batch_defaults
from servesim.replica.kv_cache import KVCacheManager
from servesim.replica.recent_keys import RecentKeys
from servesim.replica.schedulers import Scheduler, get_scheduler
from servesim.scenario import Scenario, SchedulerConfig


@dataclass(frozen=True)
class PoolSpec:
    """One pool with every setting resolved."""

    name: str
    replicas: int
    model: str
    gpu: str
    tp: int
    dtype: str
    config: EngineConfig  # engine arguments with vLLM's defaults filled in for this GPU and model
    scheduler: SchedulerConfig
    perf: Any  # the pool's performance model
    num_gpu_blocks: int
    num_cpu_blocks: int
    mtbf_s: float | None
    mttr_s: float
    role: str = "mixed"  # mixed, prefill or decode (disaggregation)
    gpus_per_node: int = 8
    # Does something outside the replicas read their prefix caches (a router that reads them, a
    # KV store, prefill/decode disaggregation)? If not, a policy that never looks a request up
    # (`Scheduler.looks_up_prefixes`) runs its KV cache without prefix caching: its keys would
    # be read by nobody.
    cache_read_outside: bool = True
    # a migrator reads each replica's head of line at its polls (`Scheduler.head_read_outside`)
    head_read_outside: bool = False
    # the replicas' KV caches share one store of freed turns' keys (a CPU saving, same results)
    recent_keys: RecentKeys = field(default_factory=RecentKeys, compare=False, repr=False)

    def make_parts(self) -> tuple[Scheduler, KVCacheManager]:
        """A fresh scheduler and KV cache for one replica of this pool."""
        cls = get_scheduler(self.scheduler.name)
        if getattr(self.perf, "data_parallel_size", 1) > 1:  # attention DP: one scheduler and KV cache per rank
            return make_attention_dp_parts(cls, self.scheduler.params(), self.config, self.perf, self.num_gpu_blocks,
                                           self.num_cpu_blocks, self.recent_keys)
        prefix = self.config.enable_prefix_caching and (cls.looks_up_prefixes or self.cache_read_outside)
        kv = cls.make_kv_cache(self.num_gpu_blocks, self.config.block_size, prefix, self.num_cpu_blocks)
        if isinstance(kv, KVCacheManager):
            kv.share_recent_keys(self.recent_keys)
        scheduler = cls(self.scheduler.params(), self.config, kv, self.perf)
        if self.head_read_outside:
            scheduler.head_read_outside = True
        return scheduler, kv


def resolve_engine_config(cfg: EngineConfig, perf) -> EngineConfig:
    """Fill the engine arguments left unset with vLLM's defaults for this GPU and model, and
    refuse what vLLM refuses at start-up."""
    tokens, seqs = serve_batch_defaults(perf.gpu_name, perf.hbm_bytes)
    # the model's context length when the catalogue knows it (Llama-3.1: 128K)
    model_len = cfg.max_model_len or getattr(perf, "max_model_len", None) or 131072
    if not cfg.enable_chunked_prefill:  # vLLM: a whole prompt must fit in one step's budget
        tokens = max(tokens, model_len)
    resolved = cfg.model_copy(update={
        "max_num_batched_tokens": cfg.max_num_batched_tokens or tokens,
        "max_num_seqs": cfg.max_num_seqs or seqs,
        "max_model_len": model_len,
    })
    check_engine_limits(resolved)
    return resolved


def resolve_pools(scenario: Scenario) -> list[PoolSpec]:
    """The scenario's pools (one pool named `default` without a `pools` section)."""
    pools = _pools(scenario)
    if scenario.migration.enabled:
        pools = [replace(p, head_read_outside=True) for p in pools]
    # (`simulate` keeps keyed joins off where this is set too)
    outside = (get_router(scenario.router.name).reads_prefix_cache or scenario.kv_store.enabled
               or any(p.role != "mixed" for p in pools))
    return pools if outside else [replace(p, cache_read_outside=False) for p in pools]


def _pools(scenario: Scenario) -> list[PoolSpec]:
    if not scenario.pools:
        return [_pool(scenario, "default", scenario.replicas, scenario.model, scenario.gpu, scenario.tp,
                      scenario.dtype, scenario.engine, scenario.scheduler, None, 300.0)]
    out = []
    for p in scenario.pools:
        engine = scenario.engine
        if p.engine:
            try:
                engine = EngineConfig.model_validate({**scenario.engine.model_dump(exclude_unset=True), **p.engine})
            except Exception as e:  # pydantic's message, made one line
                raise InputError(f"pools.{p.name}.engine: {str(e).splitlines()[-2].strip()}") from None
        sched = scenario.pool_scheduler(p)
        spec = _pool(scenario, p.name, p.replicas, p.model or scenario.model, p.gpu or scenario.gpu,
                     p.tp or scenario.tp, p.dtype or scenario.dtype, engine, sched, p.mtbf_s, p.mttr_s)
        out.append(replace(spec, role=p.role, gpus_per_node=p.gpus_per_node))
    return out


def _no_kv_room(model: str, gpu: str, tp: int, config: EngineConfig, perf) -> str:
    """Why no KV block fits: the memory budget and what takes it, largest share named first."""
    gib = 2**30
    budget = config.gpu_memory_utilization * perf.hbm_bytes
    parts = sorted([(perf.weight_bytes_per_gpu, f"{model} weights"),
                    (perf.activation_peak_bytes(config.max_num_batched_tokens),
                     f"activations of max_num_batched_tokens {config.max_num_batched_tokens}"),
                    (perf.misc_bytes, "perf.misc_bytes")], key=lambda p: -p[0])
    if state := perf.state_bytes_per_seq():  # hybrid models: the running cap's linear-attention states
        parts.append((config.max_num_seqs * state,
                      f"linear-attention states of max_num_seqs {config.max_num_seqs}"))
    used = ", ".join(f"{what} {b / gib:,.1f} GiB" for b, what in parts)
    return (f"no room for KV cache on {tp} x {gpu}: gpu_memory_utilization {config.gpu_memory_utilization} "
            f"gives {budget / gib:,.1f} GiB per GPU and {used} take it all")


def _pool(scenario: Scenario, name: str, replicas: int, model: str, gpu: str, tp: int, dtype: str,
          engine: EngineConfig, scheduler: SchedulerConfig, mtbf_s: float | None, mttr_s: float) -> PoolSpec:
    perf = build_perf_model(model, gpu, tp, dtype, scenario.perf)
    config = resolve_engine_config(engine, perf)
    num_gpu_blocks = perf.num_gpu_blocks(config.block_size, config.gpu_memory_utilization,
                                         config.max_num_batched_tokens, config.max_num_seqs)
    if num_gpu_blocks <= 0:
        where = "" if name == "default" else f"pool '{name}': "
        raise InputError(where + _no_kv_room(model, gpu, tp, config, perf))
    num_cpu_blocks = int(config.swap_space_gb * 2**30 // (config.block_size * perf.kv_bytes_per_token))
    return PoolSpec(name, replicas, model, gpu, tp, dtype, config, scheduler, perf, num_gpu_blocks, num_cpu_blocks,
                    mtbf_s, mttr_s)
