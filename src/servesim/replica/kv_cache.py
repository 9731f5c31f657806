"""Paged KV cache with vLLM v1 prefix caching (block pool + free queue + hash map).

Semantics follow vLLM v1's `KVCacheManager`/`BlockPool`:
- a request holds `ceil(tokens / block_size)` blocks, allocated only for tokens scheduled now;
- a full block whose tokens are known to be shareable gets a key and is registered in the
  cache map when it is scheduled (not when computed), so a later request can hit it;
- freed blocks go to the tail of one LRU free queue (a request's tail block first) and keep
  their key until popped for reuse, so a later request, or the same request after preemption,
  can still hit them; allocation pops from the head;
- hits are whole blocks, and at most `num_tokens - 1` tokens (the last token is recomputed to
  produce logits).

What the simulation does not need is not modelled: physical block ids. Blocks without a key
are interchangeable, so the free queue stores runs of them as counts. Keyed blocks are slots
of groups (`prefix_groups.py`: flat lists of reference counts and free-queue stamps over a
stretch of positions, typically one request's prefix); the index maps each key run (one trace
hash block, e.g. 32 KV blocks under one Mooncake hash) to its group. A request's keyed blocks
are its first `num_keyed` positions, held as a few (group, positions) segments, so hits,
registration, freeing and eviction cost a few list slices per segment rather than Python work
per block. Freeing puts each segment in the free queue as one entry, evicted last block first,
as vLLM's per-block entries in reverse order would be. A block computed twice concurrently
(same key) stays unregistered — vLLM registers duplicates too, which only matters once the
first copy is evicted (documented choice); the request holding it remembers its position
(`Held.dups`, `prefix_index.py`).

Every request's blocks have an identity, as vLLM hashes every full block of every request.
Keys (`Request.kv_block_keys`, from the trace's `hash_ids`) cover the prefix a request may
share; the blocks past it hold tokens unique to the request, so only the request itself can hit
them, after its own recompute preemption. They need no hash map: `free_preempted` puts a
preempted request's full computed unique blocks in the free queue as one tagged run (`Tail`:
owner and surviving count), after its partial/uncomputed blocks and before its keyed ones
(vLLM's order: a request's tail blocks enter first, so they are evicted first). Popping from
the head evicts the run's last blocks first, so what survives is a leading run. Re-admitted,
the request hits its keyed prefix as before and, if all of it hit, the surviving unique blocks
that follow (capped, like every hit, at `num_tokens - 1` tokens). Choices: only blocks whose
KV was computed count (vLLM also hashes blocks scheduled in the step that preempts them); a
request's run is forgotten when it is admitted again (hit or not) or removed; blocks of a
request that finishes or is swapped out stay anonymous (nobody else can hit them).

The free queue is a composed `FreeQueue` (`free_queue.py`), the CPU swap tier a composed
`CPUTier` (`cpu_tier.py`). This module holds the pool and allocation; the manager's other
methods come from mixins, one per responsibility: prefix lookups and registration
(`kv_prefix_caching.py`), freeing (`kv_release.py`), swapping to the CPU tier
(`kv_cpu_swap.py`), a pass's decodes allocated in bulk (`kv_decodes.py`).
"""

from __future__ import annotations

from typing import Any, Sequence

from servesim.replica.block_keys import BlockKeys, block_keys
from servesim.replica.cpu_tier import CPUTier
from servesim.replica.free_queue import FreeQueue
from servesim.replica.kv_cpu_swap import CPUSwap
from servesim.replica.kv_decodes import DecodeAllocation
from servesim.replica.kv_prefix_caching import PrefixCaching
from servesim.replica.kv_release import BlockRelease
from servesim.replica.prefix_index import Held, Hits, PrefixIndex
from servesim.replica.recent_keys import RecentKeys

__all__ = ["KVCacheManager", "Hits", "BlockKeys", "block_keys", "cdiv"]


# The keys a cache's dead groups (evicted whole, `PrefixRegistration.retire`) keep indexed, per
# GPU block: the index then holds at most twice the keys of a full cache. On vllm sessions at 1
# replica (4,000 requests) a quarter of the blocks took back 51 % of the keys a next turn would
# insert again, one block 84 %, four blocks the same 84 % (the rest: prompts' first chunks).
DEAD_KEYS_PER_BLOCK = 1


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


class KVCacheManager(PrefixCaching, BlockRelease, CPUSwap, DecodeAllocation):
    """GPU block pool with prefix caching, plus a CPU swap tier tracked by capacity."""

    # Does a stretch through finishes apply its growth and its finishes' releases in step order
    # (`replica/ordered_frees.py`: SGLang's radix cache, whose finishes insert into its tree)?
    # Here finishes commute with the stretch's pops as they are (`Engine._through_finishes`).
    through_in_order = False

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
        self.cpu = CPUTier(num_cpu_blocks)
        self._prefix = PrefixIndex()
        self._prefix.dead_capacity = DEAD_KEYS_PER_BLOCK * num_gpu_blocks
        self._queue = FreeQueue(num_gpu_blocks, self._prefix)
        self._tails = self._queue.tails  # live tagged runs of preempted requests, by owner
        self._held: dict[Any, Held] = {}
        self._recent_keys = RecentKeys().shared()  # a next turn builds its keys from its parent's
        self.offers_keys = False  # finishes inside stretches offer their keys (`RecentKeys.offer`): many replicas
        self._planned = None  # a stretch's registration, planned by `keys_conflict_many`
        # What the engine's last stepped step told of its decodes (`token_advance.advance_and_tell`:
        # the decodes, those of them that finished, those going on whose next token starts a
        # block), for the allocation of the next `schedule` only (the engine clears it); a set, of
        # those going on and not edges, where the batch is sorted again before it (`quiet_decodes`).
        self.expected: tuple[list, tuple, list] | set | None = None
        # The requests the last `_allocate_decodes` pass gave their token, each with every full
        # keyed block registered (all or nothing: `register_appends`): a batch with prefix keys
        # is told only of decodes such a pass covered (`Engine._told_kv`). Kept only where the
        # engine asks (a list, empty before its `schedule`): None, no pass copies its requests.
        self.passed: list | None = None
        self.num_planned_registrations = 0
        # Statistics for the prefix-cache hit rate (vLLM: hits / queried tokens).
        self.num_queried_tokens = 0
        self.num_hit_tokens = 0

    def share_recent_keys(self, store: RecentKeys) -> None:
        """Keep the built keys of freed requests in `store`, shared with other caches (the
        replicas of a pool), instead of this cache's own (`RecentKeys.shared`)."""
        self._recent_keys = store.shared()

    # ---------------------------------------------------------------- queries
    def num_blocks_of(self, req_id: int) -> int:
        held = self._held.get(req_id)
        return held.num_keyed + held.num_plain if held else 0

    def num_blocks_list(self, reqs: list[Any]) -> list[int]:
        """`num_blocks_of` each request's id, in one pass (as `RadixKVCache.num_blocks_list`)."""
        get = self._held.get
        return [h.num_keyed + h.num_plain if (h := get(r.id)) is not None else 0 for r in reqs]

    def first_new_block_steps(self, reqs: list[Any], ctx1: list[int]) -> list[int]:
        """For requests holding blocks for ctx1[i] tokens' worth of work, the first decode step
        j >= 1 of a stretch that needs one more block (step j needs room for ctx1[i] + j)."""
        held = self._held
        bs = self.block_size
        return [((h := held[r.id]).num_keyed + h.num_plain) * bs - c + 1 for r, c in zip(reqs, ctx1)]

    def record_query(self, num_tokens: int, num_hit_tokens: int) -> None:
        self.num_queried_tokens += num_tokens
        self.num_hit_tokens += num_hit_tokens

    def blocks_needed(self, req: Any, num_new_tokens: int, computed: Hits | Sequence = ()) -> int:
        """Free blocks an `allocate_slots` call would consume (cached-free hits included)."""
        held = self._held.get(req.id)
        # (the hits' blocks counted apart: the new tokens' blocks start past them, a whole number of blocks)
        need = -(-(req.num_computed_tokens + num_new_tokens) // self.block_size)
        if held is not None:
            need -= held.num_keyed + held.num_plain
        if need < 0:
            need = 0
        if type(computed) is not Hits:  # (empty: any other `computed`)
            return need
        if computed.num_keyed:
            need += self._prefix.num_free(computed)
        return need + computed.num_own

    # ---------------------------------------------------------------- mutation
    def allocate_slots(self, req: Any, num_new_tokens: int, computed: Hits | Sequence = ()) -> bool:
        """Give `req` blocks for `num_new_tokens` more tokens (after `computed` hits).

        Returns False, changing nothing, when there are not enough free blocks.
        """
        held = self._held.get(req.id)
        bs = self.block_size
        if held is not None and not computed:  # hot path: a running request grows
            total = req.num_computed_tokens + num_new_tokens
            new = -(-total // bs) - held.num_keyed - held.num_plain
            if new > 0:
                if new > self.num_free_blocks:
                    return False
                self._pop_free(new)
                held.num_plain += new
            end = req.prompt_len + req.num_output_tokens
            self._cache_full_blocks(req, held, total if total < end else end)
            return True
        # (a `Hits`' counts read once: its truth is a Python `__len__` call; any other `computed` is empty)
        num_keyed, num_own = (computed.num_keyed, computed.num_own) if type(computed) is Hits else (0, 0)
        keys = req.kv_block_keys
        need = -(-(req.num_computed_tokens + num_new_tokens) // bs)
        if held is None and not (num_keyed or num_own) and (
                keys is None or not (keys.num_blocks if type(keys) is BlockKeys else keys)):
            # a new request without prefix keys
            if need > self.num_free_blocks:
                return False
            if self._tails:
                self._tails.pop(req.id, None)  # re-admitted without hits: its run is forgotten
            self._pop_free(need)
            self._held[req.id] = Held(num_plain=need)
            return True
        if held is not None:
            need -= held.num_keyed + held.num_plain
        # `blocks_needed`, less its pass over the hits' extents where a bound of it fits (the
        # usual case): at most `num_keyed` of the hits sit in the free queue
        if ((need if need > 0 else 0) + num_keyed + num_own > self.num_free_blocks
                and (not num_keyed or self.blocks_needed(req, num_new_tokens, computed) > self.num_free_blocks)):
            return False
        if held is None:
            if type(keys) is BlockKeys and keys.run_keys._list is None and self._recent_keys:
                # A policy that registers without looking up hits first (orca, sarathi, vtc):
                # a next turn's keys from its previous turn's, as a lookup would build them.
                self._recent_keys.reuse_into(keys)
            held = self._held[req.id] = Held(keys=keys)
        tail = self._tails.pop(req.id, None) if self._tails else None
        if tail is None:
            num_own = 0
        if num_own:  # the surviving unique blocks leave their run (the rest become anonymous)
            tail.count -= num_own
            self.num_free_blocks -= num_own
            held.num_plain += num_own
        if num_keyed:
            self.num_free_blocks -= self._prefix.hit(computed, held)  # count 0 -> leave the queue
            held.num_keyed += num_keyed
        total = req.num_computed_tokens + (num_keyed + num_own) * bs + num_new_tokens
        new = -(-total // bs) - held.num_keyed - held.num_plain
        if new > 0:
            self._pop_free(new)
            held.num_plain += new
        end = req.prompt_len + req.num_output_tokens
        self._cache_full_blocks(req, held, total if total < end else end)
        return True

    def passed_all(self, decodes: list[Any]) -> bool:
        """Did the last allocation pass give each of `decodes` its token (`passed`, read once)?
        Then each has every full keyed block registered: only those whose next token completes
        a block may register one (a request moved in or allocated alone may have left some)."""
        passed, self.passed = self.passed, None
        return type(self) is KVCacheManager and bool(passed) and passed[:len(decodes)] == decodes

    def allocate_plain_many(self, grants: list[tuple[Any, int]], ahead: int = 0) -> None:
        """`allocate_plain` for several (request, blocks) at once (caller checked the free count);
        `ahead` of those blocks were taken from the free queue already (`pop_ahead`)."""
        n = sum([nb for _, nb in grants])  # (a list: one call, not a generator's per grant)
        if ahead > n:  # (a crash lost the step in flight: stepping took its blocks, then freed them)
            self._queue.push_plain(ahead - n)
            ahead = n
        if n:
            self.num_free_blocks -= ahead
            self._pop_free(n - ahead)
            held = self._held
            for req, nb in grants:
                held[req.id].num_plain += nb

    def pop_ahead(self, n: int) -> None:
        """Take `n` blocks from the head of the free queue now, evicting keyed ones, for an
        allocation a stretch makes when it is applied (`allocate_plain_many`'s `ahead`): a read
        of this cache from outside inside the stretch then finds what stepping's allocations
        so far left (`Replica.cached_blocks`). They count as free until that allocation."""
        self._queue.pop(n)

    # ---------------------------------------------------------------- KV transfers (`detach`: kv_release.py)
    def reserve(self, req_id: int, num_tokens: int) -> bool:
        """Hold plain blocks for `num_tokens` tokens of a request whose KV is arriving from
        another replica (the receiver allocates before the transfer starts); False, changing
        nothing, if they are not free."""
        need = cdiv(num_tokens, self.block_size)
        if need > self.num_free_blocks or req_id in self._held:
            return False
        self._pop_free(need)
        self._held[req_id] = Held(num_plain=need)
        return True

    # ---------------------------------------------------------------- internals
    def _pop_free(self, n: int) -> None:
        """Take `n` blocks from the head of the free queue, evicting keyed ones from the cache."""
        self.num_free_blocks -= n
        self._queue.pop(n)

    def check_all_free(self) -> None:
        """Invariant at the end of a run: every block is back in the free pool."""
        if self._held or self.num_free_blocks != self.num_gpu_blocks:
            raise AssertionError(
                f"KV blocks leaked: {self.num_gpu_blocks - self.num_free_blocks} held by {len(self._held)} requests"
            )
        self.cpu.check_all_free()
