"""Least outstanding requests (join the shortest queue, router-local in-flight counts)."""

from __future__ import annotations

from servesim.cluster.routers import register
from servesim.cluster.routers.base import Router, RouterParams
from servesim.cluster.routers.common import TieBreak, argmin_pick
from servesim.cluster.view import ClusterView
from servesim.workload.request import Request


class LeastRequestsParams(RouterParams):
    tie_break: TieBreak = "random"
    """Among replicas with equally few requests: `random` (AIBrix least-request) or `first`
    (lowest index, as splitwise-sim `jsq` and Python's `min`)."""


@register("least-requests")
class LeastRequests(Router):
    """argmin `num_outstanding`: requests this router dispatched and that have not finished.

    Source: AIBrix `least-request` (`pkg/plugins/gateway/algorithms/least_request.go`: the pod
    with the fewest requests, random among ties); splitwise-sim `jsq`. The count is the
    router's own in-flight counter, so it is exact even when engine metrics are stale.
    """

    Params = LeastRequestsParams

    def route(self, req: Request, view: ClusterView) -> int | None:
        cands = view.candidates
        keys = [view.view(i).num_outstanding for i in cands]
        return argmin_pick(cands, keys, self.params.tie_break, self.rng)
