"""Round robin over the eligible replicas (SGLang `round_robin`, splitwise-sim `round_robin`)."""

from __future__ import annotations

from servesim.cluster.routers import register
from servesim.cluster.routers.base import Router
from servesim.cluster.view import ClusterView
from servesim.workload.request import Request


@register("round-robin")
class RoundRobin(Router):
    """Each request goes to the next eligible replica in index order, cycling."""

    reads_state = False

    def __init__(self, params, num_replicas, rng) -> None:
        super().__init__(params, num_replicas, rng)
        self._next = 0  # index of the replica after the last one chosen

    def route(self, req: Request, view: ClusterView) -> int | None:
        cands = view.candidates
        # the first candidate at or after the cursor (candidates are in index order)
        pick = next((i for i in cands if i >= self._next), cands[0])
        self._next = pick + 1
        return pick
