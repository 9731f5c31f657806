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
    model's time for the uncached tokens. With a KV store (`kv_store`), a longer prefix in the
    store adds its load time and shortens the prefill when loading beats recomputing (the
    paper's `T_transfer` branch, with the store's own rule in place of the manually tuned
    `kvcache_balancing_threshold`). The estimate is kept in `req.extra["ttft_pred_s"]` for
    early rejection. Not modelled: hot-block replication between instances. A router not
    bound to replicas (hand-built views) applies the same rule counted in tokens (queued +
    uncached prompt tokens).
    """

    Params = MooncakeParams
    reads_prefix_cache = True  # (`view.cached_blocks`)

    def __init__(self, params, num_replicas, rng) -> None:
        super().__init__(params, num_replicas, rng)
        self.predictor: Predictor | None = None
        self.kv_store = None

    def bind(self, replicas: list, kv_store=None) -> None:
        self.predictor = Predictor([r.engine for r in replicas])
        self.kv_store = kv_store

    def route(self, req: Request, view: ClusterView) -> int | None:
        cands = view.candidates
        est = self.estimates(req, view)
        pick = argmin_pick(cands, est, self.params.tie_break, self.ints)
        req.extra["ttft_pred_s"] = est[cands.index(pick)]
        return pick

    def estimates(self, req: Request, view: ClusterView) -> list[float]:
        """Estimated TTFT of `req` on each candidate."""
        pred, store = self.predictor, self.kv_store
        out = []
        for i in view.candidates:
            queued = view.view(i).outstanding_prefill_tokens
            if pred is None:  # not bound to replicas (views only): the same rule counted in tokens
                cached = view.cached_blocks(i, req) * req.hash_block_tokens if self.params.cache_aware else 0
                out.append(float(queued + req.prompt_len - min(cached, req.prompt_len - 1)))
                continue
            if not self.params.cache_aware:
                out.append(pred.ttft_s(i, queued, req.prompt_len, 0))
                continue
            blocks = view.cached_blocks(i, req)
            load_s, cached = 0.0, blocks * req.hash_block_tokens
            if store is not None:  # the store's longer prefix, when loading it beats recomputing
                tokens, t_s = store.plan(req, i, blocks)
                if tokens:
                    load_s, cached = t_s, tokens
            out.append(load_s + pred.ttft_s(i, queued, req.prompt_len, cached))
        return out
