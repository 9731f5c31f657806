"""Mooncake's conductor: the prefill instance with the smallest estimated TTFT (FAST'25, Alg. 1)."""

from __future__ import annotations

from servesim.cluster.prediction import Predictor
from servesim.cluster.routers import register
from servesim.cluster.routers.base import Router, RouterParams
from servesim.cluster.routers.common import TieBreak, argmin_pick
from servesim.cluster.view import ClusterView
from servesim.workload.request import Request


class MooncakeParams(RouterParams):
    cache_aware: bool = True
    """Subtract each instance's cached prefix from the request's prefill (Mooncake's
    cache-aware selection). False: every prompt is priced in full on every instance, the
    paper's load-balancing arm (queue time only)."""
    tie_break: TieBreak = "first"
    """Among instances with equal estimates: `first` (lowest index) or `random`."""


@register("mooncake")
class Mooncake(Router):
    """argmin over candidates of T_queue + T_prefill(prompt, prefix on that instance).

    Source: Mooncake FAST'25 paper, Algorithm 1 (KVCache-centric scheduling), "cache-aware"
    branch: `prefix_len` is the longest match of the request's block keys on the instance
    (here the engine's real prefix cache, as the conductor reads the store's metadata),
    `T_queue` the predicted prefill times of what is queued there (servesim: its prompt tokens
    not yet computed, priced at the perf model's full-chunk rate) and `T_prefill` the perf
    model's time for the uncached tokens. The estimate is kept in `req.extra["ttft_pred_s"]`
    for early rejection. Not modelled: the "cache-balancing" branch that fetches a longer
    prefix from another instance's store (`kvcache_balancing_threshold`, no published default).
    """

    Params = MooncakeParams

    def __init__(self, params, num_replicas, rng) -> None:
        super().__init__(params, num_replicas, rng)
        self.predictor: Predictor | None = None

    def bind(self, replicas: list) -> None:
        self.predictor = Predictor([r.engine for r in replicas])

    def route(self, req: Request, view: ClusterView) -> int | None:
        cands = view.candidates
        est = self.estimates(req, view)
        pick = argmin_pick(cands, est, self.params.tie_break, self.rng)
        req.extra["ttft_pred_s"] = est[cands.index(pick)]
        return pick

    def estimates(self, req: Request, view: ClusterView) -> list[float]:
        """Estimated TTFT of `req` on each candidate."""
        pred = self.predictor
        out = []
        for i in view.candidates:
            cached = view.cached_blocks(i, req) * req.hash_block_tokens if self.params.cache_aware else 0
            out.append(pred.ttft_s(i, view.view(i).outstanding_prefill_tokens, req.prompt_len, cached))
        return out
