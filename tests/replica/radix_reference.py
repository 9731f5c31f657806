"""The block-granular radix cache servesim used before `radix_cache.py` worked by extents: one
tree node per cached block, one heap entry per leaf block.

Kept only as the reference of `test_radix_equivalence.py`, which drives it and the current
`RadixKVCache` with the same random operations and compares every answer and the tree's
contents after each one (so eviction order is pinned block by block).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any, Hashable

from servesim.replica.kv_cache import KVCacheManager, cdiv


class RadixNode:
    __slots__ = ("key", "parent", "children", "lock_ref", "last_access", "alive")

    def __init__(self, key: Hashable, parent: "RadixNode | None", now: int) -> None:
        self.key = key
        self.parent = parent
        self.children: dict[Hashable, RadixNode] = {}
        self.lock_ref = 0
        self.last_access = now
        self.alive = True


@dataclass(slots=True)
class _ReqKV:
    path: list[RadixNode] = field(default_factory=list)  # locked prefix nodes (blocks shared via the tree)
    plain: int = 0  # blocks private to the request


class RadixReference(KVCacheManager):
    """Block-granular radix tree with lock refs and LRU leaf eviction."""

    def __init__(self, num_gpu_blocks: int, block_size: int = 16, enable_prefix_caching: bool = True,
                 num_cpu_blocks: int = 0) -> None:
        super().__init__(num_gpu_blocks, block_size, enable_prefix_caching, num_cpu_blocks)
        self._clock = 0  # logical time of accesses (deterministic LRU)
        self.root = RadixNode(None, None, 0)
        self.root.lock_ref = 1
        self._reqs: dict[int, _ReqKV] = {}
        self._truly_free = num_gpu_blocks
        self.evictable_blocks = 0
        self.tree_blocks = 0
        self._heap: list[tuple[int, int, RadixNode]] = []
        self._seq = 0

    # ---------------------------------------------------------------- tree
    def match(self, req: Any) -> list[RadixNode]:
        """Longest cached prefix of the request, as tree nodes (touches them)."""
        keys = req.kv_block_keys
        if not self.enable_prefix_caching or not keys:
            return []
        limit = min(len(keys), (req.num_tokens - 1) // self.block_size)
        node, path = self.root, []
        for i in range(limit):
            node = node.children.get(keys[i])
            if node is None:
                break
            path.append(node)
        self._clock += 1
        for n in path:
            n.last_access = self._clock
        if path:
            self._push_if_evictable(path[-1])
        return path

    get_computed_blocks = match

    def _push_if_evictable(self, node: RadixNode) -> None:
        if node.lock_ref == 0 and not node.children and node is not self.root:
            self._seq += 1
            heapq.heappush(self._heap, (node.last_access, self._seq, node))

    def _lock(self, path: list[RadixNode]) -> None:
        for n in path:
            if n.lock_ref == 0:
                self.evictable_blocks -= 1
            n.lock_ref += 1

    def _unlock(self, path: list[RadixNode]) -> None:
        for n in path:
            n.lock_ref -= 1
            if n.lock_ref == 0:
                self.evictable_blocks += 1
                self._push_if_evictable(n)

    def _evict(self, num_blocks: int) -> None:
        heap = self._heap
        while num_blocks > 0:
            access, _, node = heapq.heappop(heap)  # enough evictable blocks: caller checked
            if not node.alive or node.children or node.lock_ref or access != node.last_access:
                continue  # stale entry
            node.alive = False
            parent = node.parent
            del parent.children[node.key]
            self.evictable_blocks -= 1
            self.tree_blocks -= 1
            self._truly_free += 1
            num_blocks -= 1
            self._push_if_evictable(parent)

    def _take(self, n: int) -> None:
        if n > self._truly_free:
            self._evict(n - self._truly_free)
        self._truly_free -= n
        self._sync()

    def _sync(self) -> None:
        self.num_free_blocks = self._truly_free + self.evictable_blocks

    # ---------------------------------------------------------------- KVCacheManager interface
    def num_blocks_of(self, req_id: int) -> int:
        st = self._reqs.get(req_id)
        return len(st.path) + st.plain if st else 0

    def first_new_block_steps(self, reqs: list[Any], ctx1: list[int]) -> list[int]:
        bs = self.block_size
        return [h * bs - c + 1 for h, c in zip(self.num_blocks_list(reqs), ctx1)]

    def num_blocks_list(self, reqs: list[Any]) -> list[int]:
        return [len(self._reqs[r.id].path) + self._reqs[r.id].plain for r in reqs]

    def blocks_needed(self, req: Any, num_new_tokens: int, computed: list[RadixNode] = ()) -> int:
        held = self.num_blocks_of(req.id)
        total = req.num_computed_tokens + len(computed) * self.block_size + num_new_tokens
        need = cdiv(total, self.block_size) - held - len(computed)
        return max(need, 0) + sum(1 for n in computed if n.lock_ref == 0)

    def allocate_slots(self, req: Any, num_new_tokens: int, computed: list[RadixNode] = ()) -> bool:
        if self.blocks_needed(req, num_new_tokens, computed) > self.num_free_blocks:
            return False
        st = self._reqs.get(req.id)
        if st is None:
            st = self._reqs[req.id] = _ReqKV()
        if computed:
            self._lock(computed)  # before evicting, so the hit cannot be evicted
            st.path.extend(computed)
            self._sync()
        total = req.num_computed_tokens + len(computed) * self.block_size + num_new_tokens
        new = cdiv(total, self.block_size) - len(st.path) - st.plain
        if new > 0:
            self._take(new)
            st.plain += new
        return True

    def allocate_decodes(self, reqs: list[Any]) -> bool:
        return False  # no bulk path: callers allocate request by request

    def allocate_plain(self, req_id: int, num_blocks: int) -> None:
        self._take(num_blocks)
        self._reqs[req_id].plain += num_blocks

    def allocate_plain_many(self, grants: list[tuple[Any, int]]) -> None:
        for req, nb in grants:
            self.allocate_plain(req.id, nb)

    def cache_full_blocks(self, req: Any, num_tokens: int) -> None:
        """Nothing to do: blocks enter the tree when the request finishes."""

    def free(self, req_id: int) -> None:
        """Release without inserting (retraction, end of run): private blocks return, the
        matched path is unlocked."""
        st = self._reqs.pop(req_id, None)
        if st is None:
            return
        self._truly_free += st.plain
        self._unlock(st.path)
        self._sync()

    def free_preempted(self, req: Any) -> None:
        """A retracted request's private blocks return unindexed (SGLang frees them too); its
        prefix in the tree stays cached."""
        self.free(req.id)

    def cache_unfinished(self, req: Any) -> None:
        """Insert a running request's computed full keyed blocks (SGLang does this after each
        prefill), keeping them locked by the request; a block already in the tree replaces the
        request's own copy, which is freed."""
        st = self._reqs.get(req.id)
        keys = req.kv_block_keys
        if st is None or not keys or not self.enable_prefix_caching:
            return
        full = min(len(keys), req.num_computed_tokens // self.block_size, len(st.path) + st.plain)
        if full <= len(st.path):
            return
        node = st.path[-1] if st.path else self.root
        self._clock += 1
        for i in range(len(st.path), full):
            child = node.children.get(keys[i])
            st.plain -= 1
            if child is None:
                child = node.children[keys[i]] = RadixNode(keys[i], node, self._clock)
                child.lock_ref = 1
                self.tree_blocks += 1
            else:
                self._truly_free += 1
                self._lock([child])
                child.last_access = self._clock
            st.path.append(child)
            node = child
        self._sync()

    def cache_finished(self, req: Any) -> None:
        """Insert a finished request's full keyed blocks into the tree, then release it."""
        st = self._reqs.pop(req.id, None)
        if st is None:
            return
        keys = req.kv_block_keys or ()
        full = min(len(keys), req.num_computed_tokens // self.block_size, len(st.path) + st.plain)
        node = st.path[-1] if st.path else self.root
        self._clock += 1
        for n in st.path:
            n.last_access = self._clock
        for i in range(len(st.path), full if self.enable_prefix_caching else 0):
            child = node.children.get(keys[i])
            st.plain -= 1
            if child is None:
                child = node.children[keys[i]] = RadixNode(keys[i], node, self._clock)
                self.tree_blocks += 1
                self.evictable_blocks += 1
            else:
                self._truly_free += 1  # computed twice: keep the tree's copy
                child.last_access = self._clock
            node = child
        self._push_if_evictable(node)
        self._truly_free += st.plain
        self._unlock(st.path)
        self._sync()

    def check_all_free(self) -> None:
        if self._reqs or self._truly_free + self.evictable_blocks != self.num_gpu_blocks \
                or self.evictable_blocks != self.tree_blocks:
            raise AssertionError(f"radix cache leaked blocks: {len(self._reqs)} requests hold some, "
                                 f"{self._truly_free} free + {self.evictable_blocks} evictable of {self.num_gpu_blocks}")
        super().check_all_free()
