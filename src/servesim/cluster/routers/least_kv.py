"""Least KV-cache usage (AIBrix `least-kv-cache` / `least-gpu-cache`)."""

from __future__ import annotations

from servesim.cluster.routers import register
from servesim.cluster.routers.base import Router, RouterParams
from servesim.cluster.routers.common import TieBreak, argmin_pick
from servesim.cluster.view import ClusterView
from servesim.workload.request import Request


class LeastKVParams(RouterParams):
    tie_break: TieBreak = "random"
    """Among replicas with equal KV usage: `random` (as AIBrix least-request breaks ties)
    or `first` (lowest index)."""


@register("least-kv")
class LeastKV(Router):
    """argmin `kv_usage`, the share of GPU KV blocks in use (vLLM `gpu_cache_usage_perc`).

    Source: AIBrix `least-gpu-cache` (min GPU KV usage) and `least-kv-cache` (min GPU + CPU
    usage; servesim's view carries the GPU tier only). GIE's `kv-cache-utilization-scorer`
    (1 - usage) ranks the same way. Reads the scraped metric, so it is as stale as the view.
    """

    Params = LeastKVParams

    def route(self, req: Request, view: ClusterView) -> int | None:
        cands = view.candidates
        keys = [view.view(i).kv_usage for i in cands]
        return argmin_pick(cands, keys, self.params.tie_break, self.ints)
