"""Uniform random choice over the eligible replicas (SGLang `random`, AIBrix `random`)."""

from __future__ import annotations

from servesim.cluster.routers import register
from servesim.cluster.routers.base import Router
from servesim.cluster.view import ClusterView
from servesim.workload.request import Request


@register("random")
class RandomRouter(Router):
    """Each request goes to a candidate drawn uniformly with the router's generator.

    Source: SGLang sgl-router `policies/random.rs` (`random_range(0..healthy.len())`);
    AIBrix `random` (its fallback when metrics are missing). Reads no replica state.
    """

    reads_state = False

    def route(self, req: Request, view: ClusterView) -> int | None:
        cands = view.candidates
        return cands[int(self.rng.integers(len(cands)))]
