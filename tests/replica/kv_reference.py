"""The per-block prefix cache servesim used before `kv_cache.py` worked by key runs: one
object per keyed block, one hash-map entry per key, one free-queue entry per freed block.

Kept only as the reference of `test_kv_cache_equivalence.py`, which drives it and the
current `KVCacheManager` with the same random operations and compares every answer (GPU
pool only: the CPU tier was not changed).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Hashable


class Block:
    """A keyed (prefix-cacheable) KV block."""

    __slots__ = ("key", "ref_cnt", "free_stamp", "registered")

    def __init__(self, key: Hashable, registered: bool) -> None:
        self.key = key
        self.ref_cnt = 1
        self.free_stamp = 0  # > 0 while the block sits in the free queue (lazy deletion stamp)
        self.registered = registered


# A hit on a block of the request's own surviving tail run (`get_computed_blocks`). Such blocks
# are interchangeable plain blocks, so one shared object stands for each of them in a hit list;
# its ref_cnt stays 0 (every such block is taken from the free queue).
OWN_TAIL_HIT = Block(None, registered=False)
OWN_TAIL_HIT.ref_cnt = 0


@dataclass(slots=True)
class _Tail:
    """A free-queue run of one preempted request's unique blocks (positions start..start+count)."""

    req_id: int
    count: int


@dataclass(slots=True)
class _Held:
    """Blocks held by one request: keyed blocks for positions [0, len(keyed)), then plain ones."""

    keyed: list[Block] = field(default_factory=list)
    num_plain: int = 0

    @property
    def num_blocks(self) -> int:
        return len(self.keyed) + self.num_plain


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def block_keys(req: Any, block_size: int) -> tuple:
    """Prefix keys at the engine's block size from the request's chained hash ids.

    hash_ids[m] identifies tokens [0, (m+1)*H); a KV block ending at token e lies in hash block
    m = (e-1)//H, and (hash_ids[m], e) identifies tokens [0, e) for any block size.
    """
    H = req.hash_block_tokens
    covered = len(req.hash_ids) * H
    return tuple((req.hash_ids[(e - 1) // H], e) for e in range(block_size, covered + 1, block_size))


class ReferenceKVCache:
    """GPU block pool with per-block prefix caching (the reference)."""

    def __init__(
        self,
        num_gpu_blocks: int,
        block_size: int = 16,
        enable_prefix_caching: bool = True,
        num_cpu_blocks: int = 0,
    ) -> None:
        if num_gpu_blocks <= 0:
            raise ValueError("the KV cache has no GPU blocks")
        self.num_gpu_blocks = num_gpu_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.num_free_blocks = num_gpu_blocks
        # Free queue, head = next to reuse. Entries: int (a run of plain blocks) or
        # (stamp, Block) for a keyed block; stale entries (stamp mismatch) are skipped.
        self._free: deque[Any] = deque([num_gpu_blocks])
        self._stamp = 0
        self._cached: dict[Hashable, Block] = {}
        self._tails: dict[int, _Tail] = {}  # live tagged runs of preempted requests, by owner
        self._held: dict[int, _Held] = {}
        # Statistics for the prefix-cache hit rate (vLLM: hits / queried tokens).
        self.num_queried_tokens = 0
        self.num_hit_tokens = 0

    # ---------------------------------------------------------------- queries
    def num_blocks_of(self, req_id: int) -> int:
        held = self._held.get(req_id)
        return held.num_blocks if held else 0

    def first_new_block_steps(self, reqs: list[Any], ctx1: list[int]) -> list[int]:
        """For requests holding blocks for ctx1[i] tokens' worth of work, the first decode step
        j >= 1 of a stretch that needs one more block (step j needs room for ctx1[i] + j)."""
        held = self._held
        bs = self.block_size
        return [(len((h := held[r.id]).keyed) + h.num_plain) * bs - c + 1 for r, c in zip(reqs, ctx1)]

    def num_cached_prefix_tokens(self, req: Any) -> int:
        """Tokens of `req`'s prefix in cached blocks (leading blocks only, as a hit needs)."""
        if not self.enable_prefix_caching or not req.hash_ids:
            return 0
        keys = req.kv_block_keys or block_keys(req, self.block_size)
        cached = self._cached
        n = 0
        for key in keys:
            if key not in cached:
                break
            n += 1
        return n * self.block_size

    def get_computed_blocks(self, req: Any) -> list[Block]:
        """Longest run of cached blocks matching the request's prefix (vLLM v1 rule): keyed
        blocks, then (all keys hit) the request's own surviving unique blocks, as `OWN_TAIL_HIT`."""
        keys = req.kv_block_keys
        tail = self._tails.get(req.id) if self._tails else None
        if not self.enable_prefix_caching or not (keys or tail):
            return []
        limit = (req.num_tokens - 1) // self.block_size
        hits = []
        if keys:
            cached = self._cached
            for i in range(min(len(keys), limit)):
                block = cached.get(keys[i])
                if block is None:
                    return hits
                hits.append(block)
            if len(hits) < len(keys):
                return hits
        if tail is not None and limit > len(hits):
            hits += [OWN_TAIL_HIT] * min(tail.count, limit - len(hits))
        return hits

    def record_query(self, num_tokens: int, num_hit_tokens: int) -> None:
        self.num_queried_tokens += num_tokens
        self.num_hit_tokens += num_hit_tokens

    def blocks_needed(self, req: Any, num_new_tokens: int, computed: list[Block] = ()) -> int:
        """Free blocks an `allocate_slots` call would consume (cached-free hits included)."""
        held = self._held.get(req.id)
        have = held.num_blocks if held else 0
        total = req.num_computed_tokens + len(computed) * self.block_size + num_new_tokens
        need = cdiv(total, self.block_size) - have - len(computed)
        return max(need, 0) + sum(1 for b in computed if b.ref_cnt == 0)

    def keys_conflict_many(self, reqs_tokens: list[tuple[Any, int]]) -> bool:
        """Would registering these requests' blocks (each up to its number of tokens) in bulk
        differ from registering them step by step? Yes if a key is already cached, or if two of
        them would register the same new key (stepping registers it for whichever gets there
        first; bulk cannot tell). The engine then steps one by one instead."""
        seen: set = set()
        cached = self._cached
        bs = self.block_size
        for req, num_tokens in reqs_tokens:
            held = self._held.get(req.id)
            keys = req.kv_block_keys
            if held is None or not keys:
                continue
            for i in range(len(held.keyed), min(num_tokens // bs, len(keys))):
                key = keys[i]
                if key in cached or key in seen:
                    return True
                seen.add(key)
        return False

    # ---------------------------------------------------------------- mutation
    def allocate_slots(self, req: Any, num_new_tokens: int, computed: list[Block] = ()) -> bool:
        """Give `req` blocks for `num_new_tokens` more tokens (after `computed` hits).

        Returns False, changing nothing, when there are not enough free blocks.
        """
        held = self._held.get(req.id)
        bs = self.block_size
        if held is not None and not computed:  # hot path: a running request grows
            total = req.num_computed_tokens + num_new_tokens
            new = -(-total // bs) - len(held.keyed) - held.num_plain
            if new > 0:
                if new > self.num_free_blocks:
                    return False
                self._pop_free(new)
                held.num_plain += new
            if req.kv_block_keys:
                self._cache_full_blocks(req, held, min(total, req.prompt_len + req.num_output_tokens))
            return True
        if held is None and not computed and not req.kv_block_keys:  # a new request without prefix keys
            need = -(-(req.num_computed_tokens + num_new_tokens) // bs)
            if need > self.num_free_blocks:
                return False
            if self._tails:
                self._tails.pop(req.id, None)  # re-admitted without hits: its run is forgotten
            self._pop_free(need)
            self._held[req.id] = _Held(num_plain=need)
            return True
        if self.blocks_needed(req, num_new_tokens, computed) > self.num_free_blocks:
            return False
        if held is None:
            held = self._held[req.id] = _Held()
        tail = self._tails.pop(req.id, None) if self._tails else None
        num_own = computed.count(OWN_TAIL_HIT) if tail is not None else 0
        if num_own:  # the surviving unique blocks leave their run (the rest become anonymous)
            tail.count -= num_own
            self.num_free_blocks -= num_own
            held.num_plain += num_own
            computed = computed[:len(computed) - num_own]
        for block in computed:
            if block.ref_cnt == 0:  # leaves the free queue
                block.free_stamp = 0
                self.num_free_blocks -= 1
            block.ref_cnt += 1
        held.keyed.extend(computed)
        total = req.num_computed_tokens + (len(computed) + num_own) * bs + num_new_tokens
        new = -(-total // bs) - held.num_blocks
        if new > 0:
            self._pop_free(new)
            held.num_plain += new
        self._cache_full_blocks(req, held, min(total, req.num_tokens))
        return True

    def allocate_decodes(self, reqs: list[Any]) -> bool:
        """One more token for each request if all decode (have generated a token and have only
        it left to compute), have no prefix keys and fit; else no-op.

        This is the bulk form of calling `allocate_slots(req, 1)` for each in order (the outcome
        is the same when every call succeeds and no key is registered).
        """
        held = self._held
        bs = self.block_size
        grow = []
        for r in reqs:
            if (not r.num_output_tokens or r.prompt_len + r.num_output_tokens - r.num_computed_tokens != 1
                    or r.kv_block_keys):
                return False
            h = held[r.id]
            if r.num_computed_tokens + 1 > (len(h.keyed) + h.num_plain) * bs:
                grow.append(h)
        if len(grow) > self.num_free_blocks:
            return False
        if grow:
            self._pop_free(len(grow))
            for h in grow:
                h.num_plain += 1
        return True

    def allocate_plain_many(self, grants: list[tuple[Any, int]]) -> None:
        """`allocate_plain` for several (request, blocks) at once (caller checked the free count)."""
        if grants:
            held = self._held
            self._pop_free(sum(nb for _, nb in grants))
            for req, nb in grants:
                held[req.id].num_plain += nb

    def cache_full_blocks(self, req: Any, num_tokens: int) -> None:
        """Register the request's full keyed blocks covering its first `num_tokens` tokens."""
        held = self._held.get(req.id)
        if held is not None:
            self._cache_full_blocks(req, held, num_tokens)

    def free(self, req_id: int) -> None:
        """Release a request's blocks; tail blocks enter the free queue first (evicted first)."""
        if self._tails:
            self._tails.pop(req_id, None)  # a preempted request removed while waiting
        held = self._held.pop(req_id, None)
        if held is not None:
            self._push_plain(held.num_plain)
            self._free_keyed(held)

    def free_preempted(self, req: Any) -> None:
        """Release a request preempted by recompute (call before resetting its progress): its
        full computed blocks past its keyed prefix go to the free queue as a run tagged with
        its id, which it can hit when admitted again (see the module docstring)."""
        held = self._held.get(req.id)
        start = len(req.kv_block_keys or ())
        full = min(req.num_computed_tokens, req.num_tokens) // self.block_size
        if held is None or not self.enable_prefix_caching or full <= start or len(held.keyed) != start:
            self.free(req.id)
            return
        del self._held[req.id]
        unique = full - start
        self._push_plain(held.num_plain - unique)  # partial or uncomputed blocks: evicted first
        tail = self._tails[req.id] = _Tail(req.id, unique)
        self._free.append(tail)
        self.num_free_blocks += unique
        self._free_keyed(held)

    def _free_keyed(self, held: _Held) -> None:
        for block in reversed(held.keyed):
            block.ref_cnt -= 1
            if block.ref_cnt == 0:
                if block.registered:
                    self._stamp += 1
                    block.free_stamp = self._stamp
                    self._free.append((self._stamp, block))
                    self.num_free_blocks += 1
                else:
                    self._push_plain(1)

    # ---------------------------------------------------------------- internals
    def _cache_full_blocks(self, req: Any, held: _Held, num_tokens: int) -> None:
        keys = req.kv_block_keys
        if not self.enable_prefix_caching or not keys:
            return
        full = min(num_tokens // self.block_size, len(keys), held.num_blocks)
        cached = self._cached
        while len(held.keyed) < full:
            key = keys[len(held.keyed)]
            registered = key not in cached
            block = Block(key, registered)
            if registered:
                cached[key] = block
            held.keyed.append(block)
            held.num_plain -= 1

    def _push_plain(self, n: int) -> None:
        if n <= 0:
            return
        free = self._free
        if free and type(free[-1]) is int:
            free[-1] += n
        else:
            free.append(n)
        self.num_free_blocks += n

    def _pop_free(self, n: int) -> None:
        """Take `n` blocks from the head of the free queue, evicting keyed ones from the cache."""
        free = self._free
        self.num_free_blocks -= n
        while n > 0:
            head = free[0]
            if type(head) is int:
                if head > n:
                    free[0] = head - n
                    return
                free.popleft()
                n -= head
                continue
            if type(head) is _Tail:  # evicts the run's last blocks first: a leading run survives
                if head.count > n:
                    head.count -= n
                    return
                free.popleft()
                n -= head.count
                if self._tails.get(head.req_id) is head:
                    del self._tails[head.req_id]
                continue
            free.popleft()
            stamp, block = head
            if block.free_stamp != stamp:
                continue  # stale: the block was reused by a cache hit
            block.free_stamp = 0
            del self._cached[block.key]
            n -= 1
