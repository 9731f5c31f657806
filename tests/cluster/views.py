"""Hand-built cluster views for router tests (no engine needed)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from servesim.cluster.routers import Router, get_router
from servesim.cluster.view import ClusterView, ReplicaView
from servesim.workload.request import Request


def rv(index: int, *, out: int = 0, running: int = 0, waiting: int = 0, kv: int = 0, blocks: int = 100,
       prefill: int = 0, decode: int = 0, t: float = 0.0) -> ReplicaView:
    return ReplicaView(index=index, pool="default", time_s=t, num_outstanding=out, num_running=running,
                       num_waiting=waiting, kv_used_blocks=kv, num_gpu_blocks=blocks,
                       outstanding_prefill_tokens=prefill, outstanding_decode_tokens=decode)


def cluster(views: list[ReplicaView], now: float = 0.0, cands: list[int] | None = None,
            cached: Callable[[int, Request], int] | dict[int, int] | None = None) -> ClusterView:
    """A view over `views` (by index); `cached` maps replica -> engine prefix-hit blocks."""
    by_index = {v.index: v for v in views}
    hits = cached if callable(cached) else (lambda i, req, d=cached or {}: d.get(i, 0))
    return ClusterView(now, cands if cands is not None else sorted(by_index), by_index.__getitem__, hits)


def make_router(name: str, num_replicas: int = 3, seed: int = 0, rng=None, **params) -> Router:
    cls = get_router(name)
    return cls(cls.Params(**params), num_replicas, rng if rng is not None else np.random.default_rng(seed))


def req(id: int = 0, prompt: int = 64, output: int = 8, hash_ids: tuple[int, ...] = (), block: int = 16,
        **kw) -> Request:
    return Request(id=id, arrival_s=0.0, prompt_len=prompt, output_len=output, hash_ids=hash_ids,
                   hash_block_tokens=block, **kw)


class ScriptedRng:
    """Stands in for the router's generator with scripted draws, to pin exact decisions."""

    def __init__(self, integers: list[int] = (), randoms: list[float] = ()) -> None:
        self._ints, self._floats = list(integers), list(randoms)

    def integers(self, n: int) -> int:
        value = self._ints.pop(0)
        assert 0 <= value < n, (value, n)
        return value

    def random(self) -> float:
        return self._floats.pop(0)
