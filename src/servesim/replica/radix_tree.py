"""The radix tree of SGLang's prefix cache (`RadixKVCache`, radix_cache.py): nodes and their operations.

A node is an extent of blocks (see radix_cache.py's docstring). This module owns the tree's
structure and its LRU order: matching a request's keys, splitting extents, lock refs along a
path, inserting a request's blocks and evicting leaves through a heap of access times. It is
apart from radix_cache.py, which does the `KVCacheManager` accounting (who holds how many
blocks, free and evictable counts), because that is what schedulers call, while the tree is
the data structure behind it. `RadixTree` is a mixin: its methods share the cache's counts
(`evictable_blocks`, `tree_blocks`, `_truly_free`) and clock, which eviction and insertion
update as they go, and the hot allocation path reaches them with no extra call.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from servesim.replica.block_keys import BlockKeys, block_idents
from servesim.replica.recent_keys import RecentKeys

if TYPE_CHECKING:
    from servesim.replica.radix_cache import _ReqKV


class RadixNode:
    """An extent of tree blocks; `idents[0]` keys it in its parent's `children`."""

    __slots__ = ("idents", "parent", "children", "lock_ref", "last_access", "alive")

    def __init__(self, idents: list, parent: "RadixNode | None", now: int) -> None:
        self.idents = idents
        self.parent = parent
        self.children: dict[Any, RadixNode] = {}
        self.lock_ref = 0
        self.last_access = now
        self.alive = True

    @property
    def key(self) -> Any:
        return self.idents[0]

    def path(self) -> list["RadixNode"]:
        """This node and its ancestors below the root, deepest first."""
        out, n = [], self
        while n.parent is not None:
            out.append(n)
            n = n.parent
        return out


@dataclass(slots=True)
class Match:
    """A prefix hit: the first `num_blocks` blocks of the request, the root path ending at
    `last`'s end (None: no hit). Valid until the next allocation (which may evict)."""

    last: RadixNode | None = None
    num_blocks: int = 0

    def __len__(self) -> int:
        return self.num_blocks

    def nodes(self) -> list[RadixNode]:
        """The path's nodes, root side first."""
        return self.last.path()[::-1] if self.last is not None else []


def _num_common(a: Sequence, b: Sequence, p: int, m: int) -> int:
    """Length of the common prefix of a[:m] and b[p:p+m] (binary search on C-level slice
    comparisons: equal prefixes are monotone, whatever the keys)."""
    if a[:m] == b[p:p + m]:
        return m
    lo, hi = 0, m - 1  # a[:lo] == b[p:p+lo] holds; a[:hi+1] differs
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[p:p + mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


class RadixTree:
    """Lookups, splits, locks, inserts and LRU leaf eviction of `RadixKVCache`'s tree."""

    # State owned by `RadixKVCache.__init__` (and `KVCacheManager.__init__`).
    block_size: int
    enable_prefix_caching: bool
    _recent_keys: RecentKeys
    root: RadixNode
    evictable_blocks: int
    tree_blocks: int
    _truly_free: int
    _clock: int
    _heap: list[tuple[int, int, RadixNode]]
    _seq: int

    def match(self, req: Any) -> Match:
        """Longest cached prefix of the request (touches its blocks)."""
        keys = req.kv_block_keys
        if not self.enable_prefix_caching or not keys:
            return Match()
        limit = min(len(keys), (req.num_tokens - 1) // self.block_size)
        if self._recent_keys and type(keys) is BlockKeys:
            self._recent_keys.reuse_into(keys)  # a next turn's keys from its previous turn's
        ids = block_idents(keys) if limit else ()
        node, p = self.root, 0
        while p < limit:
            child = node.children.get(ids[p])
            if child is None:
                break
            n = len(child.idents)
            k = _num_common(child.idents, ids, p, min(n, limit - p))
            node = child if k == n else self._split(child, k)
            p += k
            if k < n:
                break
        self._clock += 1
        if not p:
            return Match()
        self._touch(node)
        self._push_if_evictable(node)
        return Match(node, p)

    def _split(self, node: RadixNode, k: int) -> RadixNode:
        """Cut `node` after its first `k` blocks; returns the new upper part. The lower part
        keeps the node object, so heap entries, children and requests' path ends stay valid."""
        upper = RadixNode(node.idents[:k], node.parent, node.last_access)
        upper.lock_ref = node.lock_ref
        node.parent.children[node.idents[0]] = upper  # same key: the children's order is kept
        node.idents = node.idents[k:]
        upper.children[node.idents[0]] = node
        node.parent = upper
        return upper

    def _touch(self, node: RadixNode) -> None:
        while node.parent is not None:
            node.last_access = self._clock
            node = node.parent

    def _push_if_evictable(self, node: RadixNode) -> None:
        if node.lock_ref == 0 and not node.children and node is not self.root:
            self._seq += 1
            heapq.heappush(self._heap, (node.last_access, self._seq, node))

    def _lock(self, last: RadixNode) -> None:
        for n in last.path():
            if n.lock_ref == 0:
                self.evictable_blocks -= len(n.idents)
            n.lock_ref += 1

    def _unlock(self, last: RadixNode | None) -> None:
        for n in reversed(last.path()) if last is not None else ():
            n.lock_ref -= 1
            if n.lock_ref == 0:
                self.evictable_blocks += len(n.idents)
                self._push_if_evictable(n)

    def _evict(self, num_blocks: int) -> None:
        heap = self._heap
        while num_blocks > 0:
            access, _, node = heapq.heappop(heap)  # enough evictable blocks: caller checked
            if not node.alive or node.children or node.lock_ref or access != node.last_access:
                continue  # stale entry
            n = len(node.idents)
            k = n if n <= num_blocks else num_blocks
            num_blocks -= k
            self.evictable_blocks -= k
            self.tree_blocks -= k
            self._truly_free += k
            if k < n:  # its last blocks go; the rest is still the oldest leaf
                del node.idents[n - k:]  # (in place: the node's own list, of up to thousands of ids)
                self._push_if_evictable(node)
                continue
            node.alive = False
            del node.parent.children[node.idents[0]]
            self._push_if_evictable(node.parent)

    def _insert(self, req: Any, st: _ReqKV, full: int, lock: bool) -> RadixNode:
        """Put the request's keyed blocks [st.num_path, full) under its path end (touched now,
        and locked by it if `lock`); a block already in the tree frees the request's copy.
        Returns the new path end."""
        node = st.last or self.root
        p = st.num_path
        ids = block_idents(req.kv_block_keys) if p < full else ()
        while p < full:
            child = node.children.get(ids[p])
            if child is None:  # the rest is new: one extent
                child = node.children[ids[p]] = RadixNode(ids[p:full], node, self._clock)
                m = full - p
                self.tree_blocks += m
                st.plain -= m
                if lock:
                    child.lock_ref = 1
                else:
                    self.evictable_blocks += m
                return child
            n = len(child.idents)
            k = _num_common(child.idents, ids, p, min(n, full - p))
            if k < n:
                child = self._split(child, k)
            st.plain -= k
            self._truly_free += k  # computed twice: keep the tree's copy
            if lock:
                if child.lock_ref == 0:
                    self.evictable_blocks -= k
                child.lock_ref += 1
            child.last_access = self._clock
            node = child
            p += k
        return node
