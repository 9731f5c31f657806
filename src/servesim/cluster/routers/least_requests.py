"""Least outstanding requests (join the shortest queue, router-local in-flight counts)."""

from __future__ import annotations

from typing import Literal

from servesim.cluster.routers import register
from servesim.cluster.routers.base import Router, RouterParams
from servesim.cluster.routers.common import TieBreak, argmin_pick
from servesim.cluster.view import ClusterView
from servesim.workload.request import Request


class LeastRequestsParams(RouterParams):
    tie_break: TieBreak = "random"
    """Among replicas with equally few requests: `random` (AIBrix least-request) or `first`
    (lowest index, as splitwise-sim `jsq` and Python's `min`)."""
    count: Literal["in-flight", "engine"] = "in-flight"
    """What is counted: `in-flight`, the router's own counter of requests it sent that have not
    finished (always current); `engine`, the engine's scraped `num_running + num_waiting`
    (as stale as `router.refresh_interval_s`; AIBrix reads pods' running counts this way)."""


@register("least-requests")
class LeastRequests(Router):
    """argmin `num_outstanding`: requests this router dispatched and that have not finished.

    Source: AIBrix `least-request` (`pkg/plugins/gateway/algorithms/least_request.go`: the pod
    with the fewest requests, random among ties); splitwise-sim `jsq`. The count is the
    router's own in-flight counter, so it is exact even when engine metrics are stale; with
    `count: engine` it is the engine's scraped running + waiting, which staleness delays.
    """

    Params = LeastRequestsParams

    def route(self, req: Request, view: ClusterView) -> int | None:
        cands = view.candidates
        if self.params.count == "engine":
            keys = [(v := view.view(i)).num_running + v.num_waiting for i in cands]
        else:
            keys = view.outstandings()
        return argmin_pick(cands, keys, self.params.tie_break, self.ints)
