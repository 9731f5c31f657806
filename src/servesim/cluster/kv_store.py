"""A KV store beside the GPUs: prompt prefixes kept in CPU memory and on SSD, loaded back
instead of recomputed (LMCache, Mooncake's store, vLLM's OffloadingConnector).

Blocks are the workload's prefix blocks (`Request.hash_ids`, `hash_block_tokens` tokens each,
Mooncake's chained hashes). When a request's prompt KV is computed (its prefill hands off, or it
finishes) its blocks are written to the first tier; a tier over capacity pushes its least
recently used blocks down to the next tier, and the last tier drops them. A request's blocks
are touched root last, so that under LRU a prefix loses its tail before its root (a lost root
makes the whole prefix useless).

When a request is dispatched, the leading run of its blocks found in the store beyond the
chosen replica's own GPU prefix-cache hit is loaded: it reaches the engine after the load time
(bytes over each tier's load bandwidth, plus a per-load latency) with those tokens counted as
computed (`req.extra["kv_store_tokens"]`, the engine's external hits). With
`load_only_if_faster`, a load is skipped when recomputing those tokens on the replica would be
quicker (Mooncake's conductor prefers recompute when the fetch does not pay).

`scope: cluster` is one store for all replicas (Mooncake's distributed store over the nodes'
DRAM, LMCache's shared remote backend); `scope: replica` gives each replica its own (LMCache's
local CPU and disk backends, vLLM's OffloadingConnector), so only the replica that computed a
prefix can load it, and tier-aware routers have something to choose between.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from servesim.cluster.prediction import Predictor
from servesim.sums import left_sum
from servesim.workload.request import Request

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)


class TierConfig(BaseModel):
    """One storage tier of the KV store."""

    model_config = _STRICT

    name: Literal["cpu", "disk"] = "cpu"
    """`cpu` (host DRAM) or `disk` (local NVMe); routers weigh hits by this name."""
    capacity_gb: float = Field(256.0, gt=0)
    """Capacity in GB (10^9 bytes): per replica with `scope: replica`, in total with `cluster`."""
    load_bandwidth_GBps: float = Field(25.0, gt=0)
    """Bandwidth of loading KV from this tier into a replica's GPUs (servesim's defaults: CPU
    25 GB/s, a PCIe Gen5 x16 link in practice; disk 5 GB/s, one NVMe drive)."""


class KVStoreConfig(BaseModel):
    """The KV store's tiers and policy (off unless `enabled`)."""

    model_config = _STRICT

    enabled: bool = False
    """Keep computed prompt prefixes in the store and load them instead of recomputing."""
    scope: Literal["cluster", "replica"] = "cluster"
    """`cluster`: one store every replica loads from; `replica`: one per replica."""
    tiers: list[TierConfig] = Field(default_factory=lambda: [
        TierConfig(name="cpu", capacity_gb=256.0, load_bandwidth_GBps=25.0),
        TierConfig(name="disk", capacity_gb=2000.0, load_bandwidth_GBps=5.0)], min_length=1)
    """Tiers from fastest to slowest (blocks evicted from one go to the next), each name once."""
    load_latency_s: float = Field(1e-3, ge=0)
    """Fixed cost of one load (lookup, RPC, first byte); servesim's choice."""
    load_only_if_faster: bool = True
    """Skip a load when the replica would recompute those tokens faster (perf model)."""

    @model_validator(mode="after")
    def _unique(self) -> "KVStoreConfig":
        names = [t.name for t in self.tiers]
        if len(set(names)) != len(names):
            raise ValueError(f"tiers: each tier name once (got {', '.join(names)}; allowed: cpu, disk)")
        return self


class _Tier:
    __slots__ = ("name", "capacity_bytes", "bandwidth_Bps", "blocks", "used_bytes", "evicted", "hit_blocks",
                 "loaded_bytes")

    def __init__(self, cfg: TierConfig) -> None:
        self.name = cfg.name
        self.capacity_bytes = cfg.capacity_gb * 1e9
        self.bandwidth_Bps = cfg.load_bandwidth_GBps * 1e9
        self.blocks: OrderedDict[int, int] = OrderedDict()  # hash id -> bytes, least recent first
        self.used_bytes = 0
        self.evicted = 0  # blocks pushed out of this tier
        self.hit_blocks = 0  # blocks loaded from this tier
        self.loaded_bytes = 0


class Store:
    """One owner's tiers (the cluster's, or one replica's)."""

    def __init__(self, tiers: list[TierConfig]) -> None:
        self.tiers = [_Tier(t) for t in tiers]

    def put(self, hash_ids: tuple[int, ...], block_bytes: int) -> None:
        first = self.tiers[0]
        for h in reversed(hash_ids):  # root last: the most recently used
            for t in self.tiers:
                nbytes = t.blocks.pop(h, None)
                if nbytes is not None:
                    t.used_bytes -= nbytes
                    break
            first.blocks[h] = block_bytes
            first.used_bytes += block_bytes
        self._spill(0)

    def _spill(self, k: int) -> None:
        tier = self.tiers[k]
        nxt = self.tiers[k + 1] if k + 1 < len(self.tiers) else None
        while tier.used_bytes > tier.capacity_bytes and tier.blocks:
            h, nbytes = tier.blocks.popitem(last=False)
            tier.used_bytes -= nbytes
            tier.evicted += 1
            if nxt is not None:
                nxt.blocks[h] = nbytes
                nxt.used_bytes += nbytes
        if nxt is not None:
            self._spill(k + 1)

    def match(self, hash_ids: tuple[int, ...]) -> list[int]:
        """Tier index of each leading block of `hash_ids` found (stops at the first miss)."""
        out = []
        for h in hash_ids:
            for k, t in enumerate(self.tiers):
                if h in t.blocks:
                    out.append(k)
                    break
            else:
                break
        return out


class KVStore:
    """The run's store(s), the load decisions and their accounting."""

    def __init__(self, cfg: KVStoreConfig, engines: list, block_bytes_per_token: list[int]) -> None:
        self.cfg = cfg
        self.predictor = Predictor(engines)
        self.per_token = block_bytes_per_token  # replica -> KV bytes per token (all its GPUs)
        n = 1 if cfg.scope == "cluster" else len(engines)
        self.stores = [Store(cfg.tiers) for _ in range(n)]
        self.num_loads = 0
        self.num_skipped = 0  # loads not done: recompute was faster
        self.loaded_tokens = 0
        self.load_s: list[float] = []

    def _store(self, index: int) -> Store:
        return self.stores[0 if self.cfg.scope == "cluster" else index]

    def put(self, req: Request, index: int) -> None:
        """`req`'s prompt KV was computed on replica `index`: keep its full prefix blocks."""
        if not req.hash_ids:
            return
        n = min(len(req.hash_ids), req.prompt_len // req.hash_block_tokens)
        if n:
            self._store(index).put(req.hash_ids[:n], self.per_token[index] * req.hash_block_tokens)

    def tier_blocks(self, index: int, req: Request, gpu_blocks: int) -> list[int]:
        """Blocks of `req` that replica `index` can load beyond its `gpu_blocks` hit, per tier."""
        counts = [0] * len(self.cfg.tiers)
        if req.hash_ids:
            for k in self._store(index).match(req.hash_ids)[gpu_blocks:]:
                counts[k] += 1
        return counts

    def load_time_s(self, index: int, req: Request, counts: list[int]) -> float:
        """Time to load `counts` blocks per tier of `req` into replica `index`."""
        block = self.per_token[index] * req.hash_block_tokens
        tiers = self._store(index).tiers
        return self.cfg.load_latency_s + left_sum(c * block / t.bandwidth_Bps for c, t in zip(counts, tiers))

    def plan(self, req: Request, index: int, gpu_blocks: int) -> tuple[int, float]:
        """(prefix tokens computed once the load is done, load time) for `req` on replica
        `index` with `gpu_blocks` hit on its GPU; (0, 0.0) when nothing is worth loading."""
        counts = self.tier_blocks(index, req, gpu_blocks)
        extra = sum(counts)
        if not extra:
            return 0, 0.0
        tokens = (gpu_blocks + extra) * req.hash_block_tokens
        load_s = self.load_time_s(index, req, counts)
        if self.cfg.load_only_if_faster:
            pred = self.predictor
            saved_s = pred.prefill_s(index, req.prompt_len, gpu_blocks * req.hash_block_tokens) \
                - pred.prefill_s(index, req.prompt_len, tokens)
            if saved_s <= load_s:
                return 0, 0.0
        return tokens, load_s

    def load(self, req: Request, index: int, gpu_blocks: int) -> float:
        """Before `req` goes to replica `index`: load what pays and tag the request; the delay."""
        tokens, load_s = self.plan(req, index, gpu_blocks)
        counts = self.tier_blocks(index, req, gpu_blocks)
        if not tokens:
            self.num_skipped += sum(counts) > 0
            return 0.0
        store = self._store(index)
        block = self.per_token[index] * req.hash_block_tokens
        for c, t in zip(counts, store.tiers):
            t.hit_blocks += c
            t.loaded_bytes += c * block
        store.put(req.hash_ids[:gpu_blocks + sum(counts)], block)  # a load is a use (LRU)
        req.extra["kv_store_tokens"] = tokens
        self.num_loads += 1
        self.loaded_tokens += tokens - gpu_blocks * req.hash_block_tokens
        self.load_s.append(load_s)
        return load_s

    def section(self) -> dict:
        tiers = {}
        for store in self.stores:
            for t in store.tiers:
                d = tiers.setdefault(t.name, {"capacity_bytes": 0.0, "used_bytes": 0, "hit_blocks": 0,
                                              "loaded_bytes": 0, "evicted_blocks": 0})
                d["capacity_bytes"] += t.capacity_bytes
                d["used_bytes"] += t.used_bytes
                d["hit_blocks"] += t.hit_blocks
                d["loaded_bytes"] += t.loaded_bytes
                d["evicted_blocks"] += t.evicted
        loads = sorted(self.load_s)
        return {"scope": self.cfg.scope, "num_loads": self.num_loads, "num_skipped_loads": self.num_skipped,
                "loaded_tokens": self.loaded_tokens,
                "mean_load_s": left_sum(loads) / len(loads) if loads else 0.0,
                "max_load_s": loads[-1] if loads else 0.0, "tiers": tiers}
