"""Dodoor: (1+beta)-choice on a cached load vector refreshed every `batch_size` decisions."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from servesim.cluster.routers import register
from servesim.cluster.routers.base import Router, RouterParams
from servesim.cluster.view import ClusterView, ReplicaView
from servesim.workload.request import Request


class DodoorParams(RouterParams):
    beta: float = Field(0.6, ge=0.0, le=1.0)
    """Probability of drawing a second candidate and keeping the less loaded one
    (`dodoor.beta`, 0.6 in the artifact's example config); otherwise one random replica."""
    batch_size: int = Field(1024, ge=1)
    """Decisions between two refreshes of the cached load vector (the data store's
    `DEFAULT_BATCH_SIZE` = 1024 pushes a snapshot after that many scheduling decisions)."""
    load: Literal["requests", "tokens"] = "requests"
    """LLM adaptation of the load score: `requests` (outstanding requests, Dodoor's RIF
    `numTasks` mode) or `tokens` (outstanding prefill + decode tokens)."""


@register("dodoor")
class Dodoor(Router):
    """Randomized (1+beta)-choice over loads that are refreshed only every `batch_size` decisions.

    Source: AKafakA/dodoor `scheduler/taskplacer/CachedTaskPlacer.java` (draw `flag`, then a
    first node; if `flag < beta` draw a second node, not necessarily distinct, and move to it
    only if the first's score is strictly higher) and the data store that pushes a fresh
    load snapshot after `batch_size` decisions (spec cluster.md §5.5). Between snapshots the
    router adds the load of its own dispatches to its cached vector (a request counts 1, or
    its prompt + output tokens), so it does not pile onto one replica, while other routers'
    and the engines' progress stays invisible until the next refresh.

    LLM adaptation (servesim's choice): one resource dimension, so Dodoor's anti-affinity
    resource score reduces to comparing loads; the duration term is left out.
    """

    Params = DodoorParams

    def __init__(self, params, num_replicas, rng) -> None:
        super().__init__(params, num_replicas, rng)
        self._cached: dict[int, float] = {}  # replica -> load as of the last refresh, plus own dispatches
        self._since_refresh = 0  # decisions since the last refresh
        self._refreshed = False

    def route(self, req: Request, view: ClusterView) -> int | None:
        cands = view.candidates
        if not self._refreshed or self._since_refresh >= self.params.batch_size:
            self._cached.update((i, self._load(view.view(i))) for i in cands)
            self._since_refresh, self._refreshed = 0, True
        for i in cands:  # a replica that joined since the last refresh
            if i not in self._cached:
                self._cached[i] = self._load(view.view(i))
        self._since_refresh += 1
        flag = self.rng.random()
        pick = cands[int(self.rng.integers(len(cands)))]
        if flag < self.params.beta:
            other = cands[int(self.rng.integers(len(cands)))]
            if self._cached[pick] > self._cached[other]:
                pick = other
        return pick

    def on_dispatch(self, req: Request, replica: int, now_s: float) -> None:
        added = 1 if self.params.load == "requests" else req.prompt_len + req.output_len
        self._cached[replica] = self._cached.get(replica, 0) + added

    def _load(self, v: ReplicaView) -> float:
        if self.params.load == "requests":
            return v.num_outstanding
        return v.outstanding_prefill_tokens + v.outstanding_decode_tokens
