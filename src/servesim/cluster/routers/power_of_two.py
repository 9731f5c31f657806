"""Power of two choices: the less loaded of two distinct random replicas (SGLang `power_of_two`)."""

from __future__ import annotations

from servesim.cluster.routers import register
from servesim.cluster.routers.base import Router
from servesim.cluster.view import ClusterView
from servesim.workload.request import Request


@register("power-of-two")
class PowerOfTwo(Router):
    """Sample two distinct candidates; the one with fewer outstanding requests wins, the first
    on a tie.

    Source: SGLang sgl-router `policies/power_of_two.rs`: `idx1` uniform, `idx2` uniform over
    the others, `if load1 <= load2 { idx1 } else { idx2 }`. Load is the router's in-flight
    count (`num_outstanding`), as the router's `worker.load()`. One candidate: it is chosen.
    """

    def route(self, req: Request, view: ClusterView) -> int | None:
        cands = view.candidates
        n = len(cands)
        if n == 1:
            return cands[0]
        a = int(self.rng.integers(n))
        b = int(self.rng.integers(n - 1))
        b += b >= a  # distinct from a, uniform over the rest
        first, second = cands[a], cands[b]
        if view.outstanding(first) <= view.outstanding(second):
            return first
        return second
