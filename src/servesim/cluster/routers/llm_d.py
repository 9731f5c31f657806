"""llm-d / Gateway API Inference Extension endpoint picker: filters, weighted scorers, max-score pick."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from servesim.cluster.routers import register
from servesim.cluster.routers.base import Router, RouterParams
from servesim.cluster.routers.common import BlockIndex, max_pick
from servesim.cluster.view import ClusterView, ReplicaView
from servesim.workload.request import Request


class LlmDParams(RouterParams):
    queue_scorer_weight: float = Field(2.0, ge=0.0)
    """Weight of `queue-scorer` (GIE default config: 2)."""
    kv_cache_utilization_scorer_weight: float = Field(2.0, ge=0.0)
    """Weight of `kv-cache-utilization-scorer` (GIE default config: 2)."""
    prefix_cache_scorer_weight: float = Field(3.0, ge=0.0)
    """Weight of `prefix-cache-scorer` (GIE default config: 3)."""
    prefix_cache_mode: Literal["approximate", "precise"] = "approximate"
    """`approximate`: the router's per-replica LRU index of the blocks it routed (GIE
    prefix-cache-scorer); `precise`: the engine's real prefix-cache hits (llm-d's KV-event
    driven precise-prefix-cache-scorer)."""
    block_size_tokens: int = Field(16, ge=1)
    """GIE `blockSizeTokens`: the unit of the two limits below (servesim matches on the
    request's own prefix blocks and converts the limits into them)."""
    max_prefix_blocks_to_match: int = Field(256, ge=1)
    """GIE `maxPrefixBlocksToMatch`: only this many leading blocks (of `block_size_tokens`) count."""
    lru_capacity_per_server: int = Field(31250, ge=1)
    """GIE `lruCapacityPerServer`: blocks (of `block_size_tokens`) the approximate index keeps per replica."""
    queue_depth_threshold: int = Field(5, ge=1)
    """Utilization detector `queueDepthThreshold`: waiting requests at which a replica counts as full."""
    kv_cache_util_threshold: float = Field(0.8, gt=0.0, le=1.0)
    """Utilization detector `kvCacheUtilThreshold`: KV usage at which a replica counts as full."""
    metrics_staleness_threshold_s: float = Field(0.2, gt=0.0)
    """Utilization detector `metricsStalenessThreshold` (200 ms): older metrics count as saturated."""
    headroom: float = Field(0.0, ge=0.0, le=1.0)
    """Utilization detector `headroom`: the filter's burst allowance above the thresholds."""
    saturation_detector: Literal["utilization", "legacy"] = "utilization"
    """`utilization`: the utilization detector's mean roofline score, saturated at >= 1;
    `legacy`: the first saturation detector, saturated when no replica with fresh metrics has
    waiting <= `queue_depth_threshold` and KV usage <= `kv_cache_util_threshold`."""
    saturation_filter: bool = False
    """Run the utilization detector as a filter before scoring (drops replicas with stale
    metrics or at/over threshold x (1 + headroom); keeps all if it would drop all)."""
    shed_offline: bool = True
    """Requests with `is_offline` are sheddable."""
    shed_priority_from: int | None = None
    """Requests with `priority` >= this (servesim: larger = less important) are sheddable;
    None: priority makes no request sheddable (GIE sheds priority < 0 on its reversed scale)."""


@register("llm-d")
class LlmD(Router):
    """The GIE / llm-d endpoint picker (EPP): saturation check, filters, weighted scorers, picker.

    Source: kubernetes-sigs/gateway-api-inference-extension `pkg/epp` (scorers `queue`,
    `kv-cache-utilization`, `prefix-cache`, `max-score-picker`; the default weights 2/2/3 of
    the Helm `epp-config.yaml` and `loadDefaultConfig()`); `saturationdetector/framework/
    plugins/utilizationdetector/detector.go`; llm-d-inference-scheduler's precise prefix scorer.

    - Saturation: pool saturation = mean over candidates of max(waiting / queueDepthThreshold,
      kv usage / kvCacheUtilThreshold), 1.0 for stale metrics; servesim reads >= 1 as
      saturated (`saturation_detector: legacy`: saturated when no replica has fresh metrics
      within both thresholds, GIE's `saturationdetector.go` IsSaturated). A sheddable request
      (offline, or priority >= `shed_priority_from`) arriving at a saturated pool is rejected
      (None), as flow control answers 429 for sheddable traffic; other requests are routed
      as usual (servesim has no gateway queue).
    - Score = sum of weight x score over: queue (max q - q) / (max q - min q) on waiting
      requests (1 for all if equal), kv 1 - usage, prefix matched blocks / prompt blocks
      (prompt blocks capped at `max_prefix_blocks_to_match`).
    - Pick: the highest score, uniform among ties. After the pick the approximate index
      records the request's blocks for the chosen replica (on dispatch).
    """

    Params = LlmDParams
    reads_prefix_cache = True  # (`view.cached_blocks`)

    def __init__(self, params, num_replicas, rng) -> None:
        super().__init__(params, num_replicas, rng)
        self.index = BlockIndex()

    def route(self, req: Request, view: ClusterView) -> int | None:
        p = self.params
        if self.sheddable(req) and self.saturated(view):
            return None
        cands = list(view.candidates)
        if p.saturation_filter:
            cands = self._filter(view, cands)
        return max_pick(cands, self.scores(req, view, cands), self.rng)

    def sheddable(self, req: Request) -> bool:
        p = self.params
        return (p.shed_offline and req.is_offline) or (
            p.shed_priority_from is not None and req.priority >= p.shed_priority_from)

    def saturated(self, view: ClusterView) -> bool:
        p = self.params
        if p.saturation_detector == "utilization":
            return self.saturation(view) >= 1.0
        return not any(not self._stale(v, view.now_s) and v.num_waiting <= p.queue_depth_threshold
                       and v.kv_usage <= p.kv_cache_util_threshold for v in view.views())

    def saturation(self, view: ClusterView) -> float:
        """GIE utilization detector: mean per-replica saturation (>= 1 means saturated)."""
        total = 0.0
        for i in view.candidates:
            v = view.view(i)
            if self._stale(v, view.now_s):
                total += 1.0
            else:
                total += max(v.num_waiting / self.params.queue_depth_threshold,
                             v.kv_usage / self.params.kv_cache_util_threshold)
        return total / len(view.candidates)

    def scores(self, req: Request, view: ClusterView, cands: list[int]) -> list[float]:
        p = self.params
        views = [view.view(i) for i in cands]
        queues = [v.num_waiting for v in views]
        q_hi, q_lo = max(queues), min(queues)
        prefix = self._prefix_scores(req, view, cands)
        out = []
        for v, q, pre in zip(views, queues, prefix):
            queue = 1.0 if q_hi == q_lo else (q_hi - q) / (q_hi - q_lo)
            out.append(p.queue_scorer_weight * queue + p.kv_cache_utilization_scorer_weight * (1.0 - v.kv_usage)
                       + p.prefix_cache_scorer_weight * pre)
        return out

    def on_dispatch(self, req: Request, replica: int, now_s: float) -> None:
        if self.params.prefix_cache_mode == "approximate" and req.hash_ids:
            capacity = max(1, self.params.lru_capacity_per_server * self.params.block_size_tokens
                           // req.hash_block_tokens)
            self.index.add(replica, req.hash_ids[: self._max_blocks(req)], now_s, capacity)

    def _prefix_scores(self, req: Request, view: ClusterView, cands: list[int]) -> list[float]:
        total = min(self._max_blocks(req), max(len(req.hash_ids), math.ceil(req.prompt_len / req.hash_block_tokens)))
        if total == 0 or not req.hash_ids:
            return [0.0] * len(cands)
        if self.params.prefix_cache_mode == "precise":
            return [min(view.cached_blocks(i, req), total) / total for i in cands]
        keys = req.hash_ids[:total]
        return [self.index.match(i, keys, view.now_s) / total for i in cands]

    def _max_blocks(self, req: Request) -> int:
        p = self.params
        return max(1, p.max_prefix_blocks_to_match * p.block_size_tokens // req.hash_block_tokens)

    def _filter(self, view: ClusterView, cands: list[int]) -> list[int]:
        p = self.params
        q_limit = p.queue_depth_threshold * (1.0 + p.headroom)
        kv_limit = p.kv_cache_util_threshold * (1.0 + p.headroom)
        kept = [i for i in cands if not self._stale(view.view(i), view.now_s)
                and view.view(i).num_waiting < q_limit and view.view(i).kv_usage < kv_limit]
        return kept or cands  # fail open

    def _stale(self, v: ReplicaView, now_s: float) -> bool:
        return now_s - v.time_s > self.params.metrics_staleness_threshold_s
