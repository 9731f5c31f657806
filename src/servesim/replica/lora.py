"""A replica's LoRA adapter cache: GPU slots, a host-memory tier, load times and LRU eviction.

vLLM semantics (`vllm/lora/worker_manager.py`, `vllm/v1/core/sched/scheduler.py`): the GPU
holds at most `max_loras` adapters, so a batch holds at most that many distinct adapters; a
waiting request whose adapter is not on the GPU and finds no free slot is skipped (later
requests may still be admitted); least recently used adapters are evicted, from the GPU to the
host-memory tier (`max_cpu_loras`) and from there dropped.

One choice differs from vLLM, documented in docs/elastic.md: vLLM loads an adapter inside the
step that first uses it (the step gets longer); here a load occupies its slot for the load
time *before* the request can be admitted, and its completion is a scheduler timer, so a
fast-forwarded stretch stops at it exactly as at an arrival. Other requests keep running
meanwhile. A slot is pinned while a running request uses its adapter; a loading slot is
pinned until the load completes.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterable

from servesim.replica.swap import num_layers
from servesim.workload.request import Request

LORA_BYTES = 2  # bf16 adapter weights


def adapter_bytes(config: Any, perf: Any) -> float:
    """Bytes of one adapter on one GPU: `lora_size_mb`, or 2 * r * h * L * modules * 2 bytes
    (A and B of each target matrix, S-LoRA's count), split over tensor-parallel ranks."""
    if config.lora_size_mb is not None:
        return config.lora_size_mb * 1e6
    model = getattr(getattr(perf, "terms", None), "model", None)
    hidden = model.hidden_size if model is not None else 4096
    tp = max(getattr(perf, "tp", 1), 1)
    return (2 * config.max_lora_rank * hidden * num_layers(perf) * config.lora_target_modules * LORA_BYTES) / tp


class LoRACache:
    """Adapters resident on one replica's GPU (with the time each load completes) and in host memory."""

    def __init__(self, config: Any, perf: Any) -> None:
        self.max_loras = config.max_loras
        self.max_cpu_loras = config.max_cpu_loras or config.max_loras
        size = adapter_bytes(config, perf)
        self.cpu_load_s = size / (config.lora_pcie_gb_per_s * 1e9)
        self.storage_load_s = size / (config.lora_storage_gb_per_s * 1e9)
        self.gpu: OrderedDict[str, float] = OrderedDict()  # adapter -> load completion time, LRU first
        self.cpu: OrderedDict[str, None] = OrderedDict()  # host-memory tier, LRU first
        self.loading: dict[str, float] = {}  # adapters whose load has not completed: name -> ready time
        # counters for the summary
        self.num_loads = 0  # loads onto the GPU (from host memory or storage)
        self.num_storage_loads = 0  # of which cold, from storage
        self.load_time_s = 0.0  # summed load time
        self.num_evictions = 0  # adapters evicted from the GPU
        self.num_lookups = 0  # requests whose adapter was looked up (once each, on arrival)
        self.num_hits = 0  # of which found on the GPU (loaded or loading)

    def lookup(self, req: Request) -> None:
        """Look up a newly arrived request's adapter: a hit if it is on the GPU (or loading);
        the request is tagged (`extra["lora_hit"]`) for the summary."""
        hit = req.lora in self.gpu
        self.num_lookups += 1
        self.num_hits += hit
        req.extra["lora_hit"] = hit

    def advance(self, now_s: float) -> None:
        """Loads completed by `now_s` are done (their slots become evictable)."""
        if self.loading:
            for name in [n for n, t in self.loading.items() if t <= now_s]:
                del self.loading[name]

    def acquire(self, req: Request, now_s: float, pinned: Iterable[str]) -> bool:
        """May `req` (which names an adapter) be admitted now? If its adapter is not on the GPU
        and a slot is free (or holds an adapter nobody running uses), start loading it; the
        request that started a load is tagged with its time and count (`extra["lora_load_s"]`,
        `extra["lora_num_loads"]`, `extra["lora_num_storage_loads"]`)."""
        name = req.lora
        if name in self.gpu:
            if name in self.loading:
                return False
            self.gpu.move_to_end(name)
            return True
        if len(self.gpu) >= self.max_loras:
            busy = set(pinned) | self.loading.keys()
            victim = next((n for n in self.gpu if n not in busy), None)
            if victim is None:
                return False  # every slot is in use: the request is skipped
        else:
            victim = None
        # the source is decided before the victim moves to host memory (and maybe pushes it out)
        if name in self.cpu:
            load_s, source = self.cpu_load_s, "cpu"
            self.cpu.move_to_end(name)
        else:
            load_s, source = self.storage_load_s, "storage"
            self.num_storage_loads += 1
        if victim is not None:
            del self.gpu[victim]
            self.num_evictions += 1
            self._to_cpu(victim)
        if source == "storage":
            self._to_cpu(name)
        req.extra["lora_load_s"] = req.extra.get("lora_load_s", 0.0) + load_s
        req.extra["lora_num_loads"] = req.extra.get("lora_num_loads", 0) + 1
        req.extra["lora_num_storage_loads"] = req.extra.get("lora_num_storage_loads", 0) + (source == "storage")
        self.num_loads += 1
        self.load_time_s += load_s
        self.gpu[name] = self.loading[name] = now_s + load_s
        return False

    def _to_cpu(self, name: str) -> None:
        self.cpu[name] = None
        self.cpu.move_to_end(name)
        while len(self.cpu) > self.max_cpu_loras:
            self.cpu.popitem(last=False)

    def next_ready_s(self) -> float:
        """When the next load in flight completes (inf if none)."""
        return min(self.loading.values(), default=float("inf"))

    def state(self, name: str, pinned: Iterable[str]) -> tuple[bool, bool]:
        """(adapter on the GPU or loading, a slot could take it now) for adapter-aware routers."""
        if name in self.gpu:
            return True, True
        if len(self.gpu) < self.max_loras:
            return False, True
        busy = set(pinned) | self.loading.keys()
        return False, any(n not in busy for n in self.gpu)
