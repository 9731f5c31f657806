"""vLLM's internal data-parallel load balancer (`DPLBAsyncMPClient`)."""

from __future__ import annotations

from collections import deque

from pydantic import Field

from servesim.cluster.routers import register
from servesim.cluster.routers.base import Router, RouterParams
from servesim.cluster.view import ClusterView
from servesim.workload.request import Request


class VLLMDPParams(RouterParams):
    client_count: int = Field(1, ge=1)
    """API-server processes sharing the engines (vLLM `client_count`, `--api-server-count`):
    each dispatch adds this many to the chosen engine's local waiting count, standing in for
    the other front ends' dispatches until the next stats update."""


@register("vllm-dp")
class VLLMDataParallel(Router):
    """The engine with the lowest `waiting * 4 + running`; ties go to the first scanned.

    Source: vLLM v1 `vllm/v1/engine/core_client.py`, `DPLBAsyncMPClient.
    get_core_engine_for_request`: scan the engines from `eng_start_index` (0 for a single
    front end; servesim scans the candidates in index order), keep the first strictly
    smaller score, then add `client_count` to the chosen engine's *local* waiting count.
    The counts come from the DP coordinator (`vllm/v1/engine/coordinator.py`), which
    publishes them every `stats_update_interval_ms` = 100 ms when they change: a stale
    view. Run it with `router.refresh_interval_s: 0.1` to match.

    The local increments last until the next published snapshot: an increment made at time
    t counts while the view's `time_s` is older than t (a snapshot taken at or after t
    already includes the request).
    """

    Params = VLLMDPParams

    def __init__(self, params, num_replicas, rng) -> None:
        super().__init__(params, num_replicas, rng)
        self._dispatched_s: dict[int, deque[float]] = {}  # replica -> times of local increments

    def route(self, req: Request, view: ClusterView) -> int | None:
        best, best_score = view.candidates[0], None
        for i in view.candidates:
            v = view.view(i)
            waiting = v.num_waiting + self._local_waiting(i, v.time_s)
            score = waiting * 4 + v.num_running
            if best_score is None or score < best_score:
                best, best_score = i, score
        return best

    def on_dispatch(self, req: Request, replica: int, now_s: float) -> None:
        self._dispatched_s.setdefault(replica, deque()).append(now_s)

    def _local_waiting(self, replica: int, snapshot_s: float) -> int:
        times = self._dispatched_s.get(replica)
        if not times:
            return 0
        while times and times[0] <= snapshot_s:  # the snapshot already counts these
            times.popleft()
        return len(times) * self.params.client_count
