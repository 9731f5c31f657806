"""SGLang's radix-tree KV cache (RadixAttention) as a `KVCacheManager` for the `sglang` policy.

Granularity: the tree is built over the engine's chained prefix keys (`Request.kv_block_keys`,
one key per KV block), so SGLang with `page_size = block_size`. A node is an *extent*: a run of
consecutive blocks (a compressed radix-tree edge) whose blocks share one lock count and one
last-access time; a node is split where a match, an insert or a lock covers only part of it
(SGLang splits its nodes the same way). So lookups, inserts, locks and eviction cost work per
extent on the path, not per block. Nodes compare blocks by `block_idents` (one hashable per
block, equal exactly where the keys are).

Semantics (`mem_cache/radix_cache.py`):
- a request's prefix hit is the longest path of tree blocks matching its keys (at most
  `num_tokens - 1` tokens); matching refreshes the blocks' last-access time;
- an admitted request *locks* its matched path (lock_ref along the path); locked nodes are
  never evicted; tokens beyond the hit live in blocks private to the request;
- when a request finishes, its full keyed blocks are *inserted* into the tree (a block already
  in the tree — computed twice concurrently — is freed instead) and its path is unlocked; a
  retracted (preempted) request frees its private blocks without inserting;
- allocation evicts unlocked *leaf* blocks, least recently accessed first, when free blocks run
  out; a block whose last child goes becomes a leaf itself. Per extent: the leaf extent with the
  oldest access loses blocks from its end. This is the per-block order exactly: the blocks
  touched at one access time lie on one root path, so no two leaves ever share an access time,
  and once an extent's last block goes the block before it (same time) is the oldest leaf;
- blocks of unlocked tree nodes count as available (`num_free_blocks` = free + evictable,
  SGLang's `available_size + evictable_size`), so KV usage is what requests hold.

The tree itself (nodes, matching, splits, locks, inserts, eviction) is `RadixTree`
(radix_tree.py); this module keeps the per-request accounting schedulers call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from servesim.replica.block_keys import BlockKeys
from servesim.replica.kv_cache import KVCacheManager, cdiv
from servesim.replica.radix_tree import Match, RadixNode, RadixTree

__all__ = ["RadixKVCache", "RadixNode", "Match"]


@dataclass(slots=True)
class _ReqKV:
    last: RadixNode | None = None  # deepest node of the locked path (blocks shared via the tree)
    num_path: int = 0  # blocks on that path
    plain: int = 0  # blocks private to the request


class RadixKVCache(RadixTree, KVCacheManager):
    """Radix tree of block extents with lock refs and LRU leaf eviction."""

    def __init__(self, num_gpu_blocks: int, block_size: int = 16, enable_prefix_caching: bool = True,
                 num_cpu_blocks: int = 0) -> None:
        super().__init__(num_gpu_blocks, block_size, enable_prefix_caching, num_cpu_blocks)
        self._clock = 0  # logical time of accesses (deterministic LRU)
        self.root = RadixNode([], None, 0)
        self.root.lock_ref = 1
        self._reqs: dict[int, _ReqKV] = {}
        self._truly_free = num_gpu_blocks
        self.evictable_blocks = 0
        self.tree_blocks = 0
        self._heap: list[tuple[int, int, RadixNode]] = []
        self._seq = 0

    # A stretch through finishes holding requests with keys, or while the tree holds evictable
    # blocks, applies its growth and its finishes in step order (`replica/ordered_frees.py`)
    through_in_order = True

    # ---------------------------------------------------------------- tree (`RadixTree`)
    get_computed_blocks = RadixTree.match

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
        return st.num_path + st.plain if st else 0

    def first_new_block_steps(self, reqs: list[Any], ctx1: list[int]) -> list[int]:
        bs = self.block_size
        return [h * bs - c + 1 for h, c in zip(self.num_blocks_list(reqs), ctx1)]

    def num_blocks_list(self, reqs: list[Any]) -> list[int]:
        return [(st := self._reqs[r.id]).num_path + st.plain for r in reqs]

    def blocks_needed(self, req: Any, num_new_tokens: int, computed: Match | Sequence = ()) -> int:
        held = self.num_blocks_of(req.id)
        num_hit = len(computed)
        total = req.num_computed_tokens + num_hit * self.block_size + num_new_tokens
        need = max(cdiv(total, self.block_size) - held - num_hit, 0)
        if not num_hit:
            return need
        return need + sum(len(n.idents) for n in computed.last.path() if n.lock_ref == 0)

    def allocate_slots(self, req: Any, num_new_tokens: int, computed: Match | Sequence = ()) -> bool:
        if self.blocks_needed(req, num_new_tokens, computed) > self.num_free_blocks:
            return False
        st = self._reqs.get(req.id)
        if st is None:
            st = self._reqs[req.id] = _ReqKV()
        num_hit = len(computed)
        if num_hit:
            if st.num_path:
                raise AssertionError("a request that holds a tree path was given a prefix hit")
            self._lock(computed.last)  # before evicting, so the hit cannot be evicted
            st.last, st.num_path = computed.last, num_hit
            self._sync()
        total = req.num_computed_tokens + num_hit * self.block_size + num_new_tokens
        new = cdiv(total, self.block_size) - st.num_path - st.plain
        if new > 0:
            self._take(new)
            st.plain += new
        return True

    def reserve(self, req_id: int, num_tokens: int) -> bool:
        """Hold private blocks for a request whose KV arrives from another replica (SGLang's
        decode server allocates them from its pool before the transfer), registered as an
        allocation would be, so the request is known to every per-request call after it joins
        the batch (`num_blocks_list`, growth, `cache_finished`). It holds no tree path: the
        transferred blocks are its own until it finishes and they are inserted. False,
        changing nothing, if they are not free (evictable tree blocks count as free)."""
        need = cdiv(num_tokens, self.block_size)
        if need > self.num_free_blocks or req_id in self._reqs:
            return False
        self._take(need)
        self._reqs[req_id] = _ReqKV(plain=need)
        return True

    def detach(self, req_id: int, key: Any) -> None:
        """Keep a request's blocks under `key` while its KV is sent to another replica (the
        request leaves the scheduler; SGLang's prefill server holds them until the transfer is
        done): its private blocks stay taken and its tree path locked until `free(key)`. The
        base class's `detach` moves its own bookkeeping, which this cache does not use, so
        without this the blocks went back to the pool at hand-off, before the transfer."""
        st = self._reqs.pop(req_id, None)
        if st is not None:
            self._reqs[key] = st

    def allocate_decodes(self, reqs: list[Any]) -> bool:
        return False  # no bulk path: callers allocate request by request

    def allocate_plain(self, req_id: int, num_blocks: int) -> None:
        self._take(num_blocks)
        self._reqs[req_id].plain += num_blocks

    def allocate_plain_many(self, grants: list[tuple[Any, int]], ahead: int = 0) -> None:
        # (`ahead` is 0 here: a read from outside takes a stretch's growth ahead from vLLM's
        # cache only, `Replica.cached_blocks`.)
        # One take for all: with the tree full (a Mooncake run's usual state) each grant's own
        # take evicted, so a stretch's growth of n requests cost n evictions. Nothing touches
        # the tree between the grants, so evicting their sum at once takes the same blocks in
        # the same LRU order (only the cut points inside an extent differ).
        if grants:
            self._take(sum([nb for _, nb in grants]))
            reqs = self._reqs
            for req, nb in grants:
                reqs[req.id].plain += nb

    def cache_full_blocks(self, req: Any, num_tokens: int) -> None:
        """Nothing to do: blocks enter the tree when the request finishes."""

    def cache_full_blocks_many(self, reqs_tokens: list[tuple[Any, int]], more_tokens: int) -> None:
        """Nothing to do (as `cache_full_blocks`)."""

    def blocks_freed(self, req_ids: list[Any], dropped: dict) -> list[int]:
        """The free blocks each request's `cache_finished` would add, releasing them in this
        order after those `dropped` counts (node -> locks dropped by the earlier ones; updated):
        its private blocks (inserted into the tree unlocked, or freed where the tree has them),
        and the blocks of its path's nodes whose last lock it drops (a prefix another request
        holds stays in use). Changes nothing else (a stretch's step log and views)."""
        out = []
        for rid in req_ids:
            st = self._reqs[rid]
            n = st.plain
            node = st.last
            while node is not None and node.parent is not None:
                d = dropped.get(node, 0)
                if node.lock_ref - d == 1:
                    n += len(node.idents)
                dropped[node] = d + 1
                node = node.parent
            out.append(n)
        return out

    def free(self, req_id: int) -> None:
        """Release without inserting (retraction, end of run): private blocks return, the
        matched path is unlocked."""
        st = self._reqs.pop(req_id, None)
        if st is None:
            return
        self._truly_free += st.plain
        self._unlock(st.last)
        self._sync()

    def free_preempted(self, req: Any) -> None:
        """A retracted request's private blocks return unindexed (SGLang frees them too); its
        prefix in the tree stays cached."""
        self.free(req.id)

    def _num_full(self, req: Any, st: _ReqKV) -> int:
        keys = req.kv_block_keys
        return min(len(keys), req.num_computed_tokens // self.block_size, st.num_path + st.plain) if keys else 0

    def cache_unfinished(self, req: Any) -> None:
        """Insert a running request's computed full keyed blocks (SGLang does this after each
        prefill), keeping them locked by the request; a block already in the tree replaces the
        request's own copy, which is freed."""
        st = self._reqs.get(req.id)
        if st is None or not self.enable_prefix_caching:
            return
        full = self._num_full(req, st)
        if full <= st.num_path:
            return
        self._clock += 1
        st.last, st.num_path = self._insert(req, st, full, lock=True), full
        self._sync()

    def cache_finished(self, req: Any) -> None:
        """Insert a finished request's full keyed blocks into the tree, then release it."""
        st = self._reqs.pop(req.id, None)
        if st is None:
            return
        self._release(st, req, self._num_full(req, st) if self.enable_prefix_caching else 0)
        if type(req.kv_block_keys) is BlockKeys:
            self._recent_keys.keep(req.kv_block_keys)  # (for the conversation's next turn)
            req.kv_block_keys.release()  # done: what lookups built is not needed again

    def _release(self, st: _ReqKV, req: Any, full: int) -> None:
        """A finished request's release: its first `full` blocks inserted into the tree (`req`
        is read only then), its private rest freed and its path unlocked."""
        self._clock += 1
        if st.last is not None:
            self._touch(st.last)
        node = self._insert(req, st, full, lock=False) if full > st.num_path else st.last or self.root
        self._push_if_evictable(node)
        self._truly_free += st.plain
        self._unlock(st.last)
        self._sync()

    def free_grown(self, req_id: int, num_new_blocks: int) -> None:
        """Release a finished request without prefix keys that needed `num_new_blocks` more
        private blocks since its last allocation (an admission stretch's growth, never
        allocated): as allocating them and then `cache_finished`, which inserts nothing for it
        and then finds it gone. Plain blocks are counts here, so the order of releases and
        allocations does not matter (the caller checked that stepping had the blocks)."""
        st = self._reqs.pop(req_id)
        st.plain += num_new_blocks
        self._truly_free -= num_new_blocks
        self._release(st, None, 0)

    def swap_out(self, req_id: int, reuse_key=None):  # pragma: no cover - SGLang never swaps
        raise NotImplementedError("the radix cache has no CPU swap tier")

    def swap_in(self, req_id: int, keep_cpu_copy: bool = False):  # pragma: no cover
        raise NotImplementedError("the radix cache has no CPU swap tier")

    def check_all_free(self) -> None:
        if self._reqs or self._truly_free + self.evictable_blocks != self.num_gpu_blocks \
                or self.evictable_blocks != self.tree_blocks:
            raise AssertionError(f"radix cache leaked blocks: {len(self._reqs)} requests hold some, "
                                 f"{self._truly_free} free + {self.evictable_blocks} evictable of {self.num_gpu_blocks}")
        super().check_all_free()
