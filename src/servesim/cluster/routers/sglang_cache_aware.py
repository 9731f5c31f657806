"""SGLang router's cache-aware policy: an approximate prefix tree with a load-balance fallback."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Hashable, Sequence

from pydantic import Field

from servesim.cluster.routers import register
from servesim.cluster.routers.base import Router, RouterParams
from servesim.cluster.view import ClusterView
from servesim.workload.request import Request


class SGLangCacheAwareParams(RouterParams):
    cache_threshold: float = Field(0.3, ge=0.0, le=1.0)
    """Route to the best-matching replica only if its matched share of the prompt exceeds this."""
    balance_abs_threshold: int = Field(64, ge=0)
    """Imbalanced if max load - min load exceeds this (and the relative test holds)."""
    balance_rel_threshold: float = Field(1.5, ge=0.0)
    """Imbalanced if max load exceeds this times the min load (and the absolute test holds)."""
    eviction_interval_secs: float = Field(120.0, gt=0.0)
    """Simulated seconds between two evictions of the tree."""
    max_tree_size: int = Field(2**26, ge=0)
    """Per-replica size (tokens here, characters in SGLang) above which LRU leaves are evicted."""


class _Node:
    __slots__ = ("size", "tenants")

    def __init__(self, size: int) -> None:
        self.size = size  # tokens this node adds to its prefix
        self.tenants: dict[int, float] = {}  # replica -> last access time (s)


class ApproxTree:
    """One multi-tenant prefix tree; a node is one prefix block (its chained id is its key).

    Each tenant keeps its nodes in access order with every path touched deepest first, so a
    node always sits before its ancestors: the front of the order is an LRU *leaf* of that
    tenant, as SGLang's `evict_tenant_by_size` requires.
    """

    def __init__(self) -> None:
        self.nodes: dict[Hashable, _Node] = {}
        self.size: dict[int, int] = {}  # tenant -> tokens it holds (SGLang tenant_char_count)
        self._order: dict[int, OrderedDict[Hashable, None]] = {}

    def match(self, keys: Sequence[Hashable], tenants: Sequence[int]) -> tuple[int, int | None]:
        """(blocks matched, tenant) for the deepest node any of `tenants` holds along `keys`."""
        allowed, depth, node = set(tenants), 0, None
        for k in keys:
            n = self.nodes.get(k)
            if n is None or allowed.isdisjoint(n.tenants):
                break
            depth, node = depth + 1, n
        if node is None:
            return 0, None
        held = [t for t in tenants if t in node.tenants]  # candidate order: ties -> lowest index
        return depth, max(held, key=lambda t: node.tenants[t])

    def insert(self, keys: Sequence[Hashable], sizes: Sequence[int], tenant: int, now_s: float) -> None:
        order = self._order.setdefault(tenant, OrderedDict())
        self.size.setdefault(tenant, 0)
        for k, size in zip(keys, sizes):
            n = self.nodes.get(k)
            if n is None:
                n = self.nodes[k] = _Node(size)
            if tenant not in n.tenants:
                self.size[tenant] += n.size
            n.tenants[tenant] = now_s
        for k in reversed(keys):  # deepest first: ancestors end up more recent
            order[k] = None
            order.move_to_end(k)

    def evict(self, max_size: int) -> None:
        """Drop each tenant's least recently used leaves until it holds at most `max_size`."""
        for tenant, order in self._order.items():
            while self.size[tenant] > max_size and order:
                k, _ = order.popitem(last=False)
                n = self.nodes[k]
                del n.tenants[tenant]
                self.size[tenant] -= n.size
                if not n.tenants:  # no tenant left, so no child left either
                    del self.nodes[k]


@register("sglang-cache-aware")
class SGLangCacheAware(Router):
    """SGLang's cache-aware load balancing over an approximate prefix tree.

    Source: SGLang `sgl-router/src/policies/cache_aware.rs` and `tree.rs`; defaults from the
    Python launcher's `RouterArgs` (`sgl-router/py_src/sglang_router/router_args.py`:
    cache_threshold 0.3, balance_abs_threshold 64, balance_rel_threshold 1.5,
    eviction_interval_secs 120, max_tree_size 2**26; the later sgl-model-gateway uses 60 s).

    Per request: loads are the router's in-flight counts (`num_outstanding`). If
    `max - min > balance_abs_threshold` and `max > balance_rel_threshold * min`, the least
    loaded candidate wins (first on ties). Otherwise the deepest tree match decides: if the
    matched share of the prompt exceeds `cache_threshold`, the replica holding that node
    (the most recently used one if several); else the replica with the smallest tree. The
    request is inserted into the tree for the chosen replica either way (on dispatch).
    Every `eviction_interval_secs` each replica's part of the tree is cut to `max_tree_size`.

    Token blocks instead of characters (servesim's choice): SGLang's tree holds raw prompt
    characters; servesim has no text, so a node is one prefix block (`req.hash_ids`, chained
    ids of `req.hash_block_tokens`-token blocks) and the prompt tokens past the hashed range
    (unique to the request) form one leaf of their own. Sizes and `max_tree_size` are in
    tokens; the match rate is matched tokens / prompt tokens.
    """

    Params = SGLangCacheAwareParams

    def __init__(self, params, num_replicas, rng) -> None:
        super().__init__(params, num_replicas, rng)
        self.tree = ApproxTree()
        self._next_eviction_s = params.eviction_interval_secs

    def route(self, req: Request, view: ClusterView) -> int | None:
        p, cands = self.params, view.candidates
        self._maybe_evict(view.now_s)
        loads = [view.outstanding(i) for i in cands]
        hi, lo = max(loads), min(loads)
        if hi - lo > p.balance_abs_threshold and hi > lo * p.balance_rel_threshold:
            return cands[loads.index(lo)]
        depth, tenant = self.tree.match(req.hash_ids, cands)
        matched_tokens = min(depth * req.hash_block_tokens, req.prompt_len)
        rate = matched_tokens / req.prompt_len if req.prompt_len else 0.0
        if tenant is not None and rate > p.cache_threshold:
            return tenant
        sizes = [self.tree.size.get(i, 0) for i in cands]
        return cands[sizes.index(min(sizes))]

    def on_dispatch(self, req: Request, replica: int, now_s: float) -> None:
        keys: list[Hashable] = list(req.hash_ids)
        sizes = [req.hash_block_tokens] * len(keys)
        tail = req.prompt_len - len(keys) * req.hash_block_tokens
        if tail > 0:  # the request's unique suffix: never matched, but it fills the tree
            keys.append(("tail", req.id))
            sizes.append(tail)
        self.tree.insert(keys, sizes, replica, now_s)

    def _maybe_evict(self, now_s: float) -> None:
        if now_s >= self._next_eviction_s:
            self.tree.evict(self.params.max_tree_size)
            interval = self.params.eviction_interval_secs
            self._next_eviction_s = (math.floor(now_s / interval) + 1) * interval
