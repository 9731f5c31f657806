"""NVIDIA Dynamo's KV router: cost = overlap_score_weight x prefill blocks + decode blocks."""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from servesim.cluster.routers import register
from servesim.cluster.routers.base import Router, RouterParams
from servesim.cluster.routers.common import BlockIndex
from servesim.cluster.view import ClusterView
from servesim.sums import left_sum
from servesim.workload.request import Request


class DynamoKVParams(RouterParams):
    overlap_score_weight: float = Field(1.0, ge=0.0)
    """`--kv-overlap-score-weight`: weight of the prefill cost; 0 ignores the cache (pure load balance)."""
    router_temperature: float = Field(0.0, ge=0.0)
    """`--router-temperature`: 0 picks the lowest cost; > 0 samples a softmax of the normalised costs."""
    use_kv_events: bool = True
    """`--kv-events` (default): overlap from the engine's real prefix cache; False
    (`--no-kv-events`): the router's own index of the blocks it routed, forgotten after
    `router_ttl_secs`."""
    router_ttl_secs: float = Field(120.0, gt=0.0)
    """Time to live of the approximate index's entries (Dynamo's `ApproxKvIndexer`: 120 s)."""
    host_cache_hit_weight: float = Field(0.75, ge=0.0)
    """`--router-host-cache-hit-weight`: a prefix block found only in the worker's CPU tier
    (servesim: the KV store's `cpu` tier) counts this much of a GPU hit."""
    disk_cache_hit_weight: float = Field(0.25, ge=0.0)
    """`--router-disk-cache-hit-weight`: the same for the disk tier."""
    kv_block_size: int = Field(16, ge=1)
    """`--kv-cache-block-size`: tokens per KV block, the cost's unit; set it to the engine's
    block size (vLLM 16), since decode blocks are the engine's blocks in use."""


@register("dynamo-kv")
class DynamoKV(Router):
    """The worker with the lowest cost `overlap_score_weight x prefill_blocks + decode_blocks`.

    Source: ai-dynamo/dynamo `lib/kv-router` (formerly `lib/llm/src/kv_router`)
    `scheduler.rs` `DefaultWorkerSelector` and `softmax_sample`; defaults from
    `SchedulerConfig::default()` (weight 1.0, temperature 0.0) and the router docs (KV
    events on, approximate TTL 120 s). Per candidate:

    - overlap = GPU prefix hits + `host_cache_hit_weight` x blocks found beyond them in the KV
      store's CPU tier + `disk_cache_hit_weight` x those on its disk tier (with a `kv_store`);
    - prefill_blocks = max(0, prompt tokens - overlap blocks x their tokens) / kv_block_size
      (fractional, as Dynamo's `potential_prefill_block`);
    - decode_blocks = the engine's KV blocks in use (`kv_used_blocks`) + floor(prefill_blocks),
      the blocks the worker would hold with this request (Dynamo's potential blocks: active
      blocks plus the request's new ones);
    - temperature 0: the lowest cost; ties go to the smallest approximate index (Dynamo's
      tree-size tie-breaker), then uniformly at random. Temperature T > 0: costs are
      divided by (max - min), negated, divided by T and soft-maxed; one draw picks.
    """

    Params = DynamoKVParams
    reads_prefix_cache = True  # (`view.cached_blocks`)

    def __init__(self, params, num_replicas, rng) -> None:
        super().__init__(params, num_replicas, rng)
        self.index = BlockIndex(ttl_s=params.router_ttl_secs)
        self.kv_store = None
        self._weights: list[float] = []

    def bind(self, replicas: list, kv_store=None) -> None:
        self.kv_store = kv_store
        if kv_store is not None:
            w = {"cpu": self.params.host_cache_hit_weight, "disk": self.params.disk_cache_hit_weight}
            self._weights = [w[t.name] for t in kv_store.cfg.tiers]

    def route(self, req: Request, view: ClusterView) -> int | None:
        cands = view.candidates
        costs = self.costs(req, view)
        if self.params.router_temperature == 0.0:
            best = min(costs)
            tied = [i for i, c in zip(cands, costs) if c == best]
            smallest = min(self.index.size(i) for i in tied)
            tied = [i for i in tied if self.index.size(i) == smallest]
            return tied[0] if len(tied) == 1 else tied[int(self.rng.integers(len(tied)))]
        probs = softmax_probabilities(costs, self.params.router_temperature)
        u, cum = self.rng.random(), 0.0
        for i, prob in zip(cands, probs):
            cum += prob
            if u <= cum:
                return i
        return cands[-1]

    def costs(self, req: Request, view: ClusterView) -> list[float]:
        p, out = self.params, []
        for i in view.candidates:
            if p.use_kv_events:
                overlap = view.cached_blocks(i, req)
                if self.kv_store is not None:  # lower tiers, weighted (KV events carry the tier)
                    counts = self.kv_store.tier_blocks(i, req, overlap)
                    overlap += left_sum(w * c for w, c in zip(self._weights, counts))
            else:  # (the approximate index predicts GPU reuse only, as Dynamo's)
                overlap = self.index.match(i, req.hash_ids, view.now_s)
            prefill_tokens = max(0, req.prompt_len - overlap * req.hash_block_tokens)
            prefill_blocks = prefill_tokens / p.kv_block_size
            decode_blocks = view.view(i).kv_used_blocks + math.floor(prefill_blocks)
            out.append(p.overlap_score_weight * prefill_blocks + decode_blocks)
        return out

    def on_dispatch(self, req: Request, replica: int, now_s: float) -> None:
        if not self.params.use_kv_events and req.hash_ids:
            self.index.add(replica, req.hash_ids, now_s)


def softmax_probabilities(costs: list[float], temperature: float) -> list[float]:
    """Dynamo's `softmax_sample` weights: lower cost, higher probability; uniform if all equal."""
    lo, hi = min(costs), max(costs)
    if lo == hi:
        return [1.0 / len(costs)] * len(costs)
    scaled = np.array([-c / (hi - lo) / temperature for c in costs])
    e = np.exp(scaled - scaled.max())
    return list(e / e.sum())
