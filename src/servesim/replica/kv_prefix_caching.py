"""Prefix caching of `KVCacheManager` (kv_cache.py): lookups and registration of keyed blocks.

The methods here find a request's cached prefix (`get_computed_blocks`), say whether bulk
registration would differ from stepping (`keys_conflict_many`) and register a request's
completed keyed blocks in the index (`cache_full_blocks*`). They are separate from the
allocation in kv_cache.py because they are the only part that knows about keys: with
`enable_prefix_caching` off nothing here changes the pool. A mixin rather than a helper
object: they share the manager's per-request records (`_held`) and its `PrefixIndex`, and the
engine calls several of them per step, so no extra call or attribute hop is added.
"""

from __future__ import annotations

import sys
from typing import Any

from servesim.replica.block_keys import BlockKeys, block_keys
from servesim.replica.prefix_index import Held, Hits, PrefixIndex
from servesim.replica.recent_keys import RecentKeys

# The hit of a request without prefix keys (every arrival of a trace without hash ids): one shared
# object rather than one made per arrival; nothing writes a `Hits` (callers read its counts and extents).
_NO_HITS = Hits()

# `more_tokens` of a plan made up to every request's last step (`_plan_whole`): more steps than
# any stretch runs
WHOLE = sys.maxsize


class PrefixCaching:
    """`KVCacheManager`'s prefix-cache lookups and registration (see the module docstring)."""

    # State owned by `KVCacheManager.__init__`.
    block_size: int
    enable_prefix_caching: bool
    _held: dict[Any, Held]
    _prefix: PrefixIndex
    _tails: dict
    _recent_keys: RecentKeys
    _planned: tuple | None  # the plan `keys_conflict_many` made, for `cache_full_blocks_many`
    num_planned_registrations: int  # registrations by such a plan (the tests assert the path ran)

    def num_cached_prefix_tokens(self, req: Any) -> int:
        """Tokens of `req`'s prefix in cached blocks (leading blocks only, as a hit needs)."""
        if not self.enable_prefix_caching or not req.hash_ids:
            return 0
        keys = req.kv_block_keys or block_keys(req, self.block_size)
        return sum(p1 - p0 for _, p0, p1 in self._prefix.leading_cached(keys, len(keys))) * self.block_size

    def offer_keys(self, keys: BlockKeys) -> None:
        """A request that finished inside a stretch offers its built keys to its next turn
        before the stretch frees its blocks (`RecentKeys.offer`)."""
        self._recent_keys.offer(keys)

    def get_computed_blocks(self, req: Any) -> Hits:
        """Longest run of cached blocks matching the request's prefix (vLLM v1 rule): keyed
        blocks, then (all keys hit) the request's own surviving unique blocks."""
        keys = req.kv_block_keys
        tail = self._tails.get(req.id) if self._tails else None
        # (a `BlockKeys`' length read as its attribute: its `__len__` and `__bool__` are Python calls)
        is_block_keys = type(keys) is BlockKeys
        num_keys = keys.num_blocks if is_block_keys else len(keys) if keys else 0
        if not self.enable_prefix_caching or not (num_keys or tail):
            return _NO_HITS
        if is_block_keys and self._recent_keys:
            self._recent_keys.reuse_into(keys)
        limit = (req.prompt_len + req.num_output_tokens - 1) // self.block_size
        exts = self._prefix.leading_cached(keys, num_keys if num_keys < limit else limit) if num_keys else []
        nk = exts[-1][2] if exts else 0
        if nk < num_keys or tail is None or limit <= nk:
            return Hits(nk, 0, exts)
        return Hits(nk, min(tail.count, limit - nk), exts)

    def keys_conflict_many(self, reqs_tokens: list[tuple[Any, int]], more_tokens: int = 0,
                           last: list[int] | None = None, whole: bool = False) -> bool:
        """Would registering these requests' blocks (each up to its number of tokens +
        `more_tokens`, or + `last[i]` if fewer: the request's last step in a stretch through
        finishes) in bulk differ from registering them step by step? Yes if a key is
        already cached, or if two of them would register the same new key (stepping registers
        it for whichever gets there first; bulk cannot tell). The engine then steps one by one
        instead. When the bulk registration is the usual case (`PrefixIndex.plan_appends`), its
        plan is kept for `cache_full_blocks_many` of the same list and `more_tokens` (a
        stretch checks its keys when planned and registers them when applied: one pass less
        over its requests, and none of the checks again). `whole` (through finishes, where
        requests may join the stretch: `replica/keyed_join.py`): first try the plan up to
        every request's last step (`_plan_whole`)."""
        if whole and last is not None and self._plan_whole(reqs_tokens, last):
            return False
        items, tokens, caps = self._plan_items(reqs_tokens, more_tokens, last, 0)
        prefix = self._prefix
        planned = prefix.plan_appends(items) if self.enable_prefix_caching else None
        if planned is not None:  # (so no conflict: `plan_appends` checks all `conflicts` does)
            self._planned = (reqs_tokens, len(reqs_tokens), more_tokens, prefix.num_inserts, planned, tokens, caps)
            return False
        self._planned = None
        return prefix.conflicts([(keys, k0, k1) for keys, _, k0, k1 in items])

    def _plan_whole(self, reqs_tokens: list[tuple[Any, int]], last: list[int]) -> bool:
        """Plan a stretch through finishes' registrations up to every request's last step:
        fewer steps register a subset, so that plan answers every later check of the same
        stretch however far it is priced, and a request that joined it since
        (`replica/keyed_join.py`, which appends to the list) only adds its own items to the
        plan kept (`plan_appends` with it as base) instead of the stretch planning all its
        requests again at each join. (Where nothing joins, the plan of the steps priced is
        shorter: a whole one would cost more than it saves.) False (no plan kept) if the whole
        registration is not the usual case: the caller then checks the steps it asks for."""
        if not self.enable_prefix_caching:
            return False
        prefix = self._prefix
        planned = self._planned
        n = len(reqs_tokens)
        if (planned is not None and planned[0] is reqs_tokens and planned[2] == WHOLE
                and planned[3] == prefix.num_inserts):
            _, n0, _, _, base, tokens, caps = planned
            if n0 == n:
                return True
        else:
            n0, base, tokens, caps = 0, None, [], []
        items, more_tokens, more_caps = self._plan_items(reqs_tokens, WHOLE, last, n0)
        plan = prefix.plan_appends(items, base)
        if plan is None:
            self._planned = None
            return False
        tokens += more_tokens
        caps += more_caps
        self._planned = (reqs_tokens, n, WHOLE, prefix.num_inserts, plan, tokens, caps)
        return True

    def _plan_items(self, reqs_tokens: list[tuple[Any, int]], more_tokens: int, last: list[int] | None,
                    start: int) -> tuple[list, list[int], list[int] | None]:
        """`keys_conflict_many`'s registrations of the requests from `start` on: (keys, held,
        first block, end) for each request with blocks to register, its number of tokens,
        and its `last` (None without)."""
        bs = self.block_size
        held_of = self._held
        items = []
        tokens = []  # each item's number of tokens (before `more_tokens`)
        caps = None if last is None else []  # each item's `last`
        for i in range(start, len(reqs_tokens)):
            req, num_tokens = reqs_tokens[i]
            keys = req.kv_block_keys
            held = held_of.get(req.id)
            if held is not None and keys is not None:
                end = (num_tokens + (more_tokens if last is None or last[i] > more_tokens else last[i])) // bs
                n = keys.num_blocks if type(keys) is BlockKeys else len(keys)  # (not a Python `__len__` call)
                if end > n:
                    end = n
                if held.num_keyed < end:
                    items.append((keys, held, held.num_keyed, end))
                    tokens.append(num_tokens)
                    if caps is not None:
                        caps.append(last[i])
        return items, tokens, caps

    def chunk_keys_conflict(self, prompt: Any, num_tokens: int, reqs_tokens: list[tuple[Any, int]],
                            more_tokens: int) -> bool:
        """`keys_conflict_many` for a prompt registering its keyed blocks up to `num_tokens`
        beside these requests (each up to its tokens + `more_tokens`): a vLLM chunk stretch's
        registrations at its longest, checked once when it is planned (fewer steps register
        a subset). Keeps no plan."""
        bs, held_of = self.block_size, self._held
        ranges = []
        for req, n in [*((r, c + more_tokens) for r, c in reqs_tokens), (prompt, num_tokens)]:
            keys = req.kv_block_keys
            held = held_of.get(req.id)
            if held is not None and keys is not None:
                end, m = n // bs, keys.num_blocks if type(keys) is BlockKeys else len(keys)
                if m < end:
                    end = m
                if held.num_keyed < end:
                    ranges.append((keys, held.num_keyed, end))
        return bool(ranges) and self._prefix.conflicts(ranges)

    def key_every_id(self, req: Any, num_tokens: int) -> None:
        """From now on key every hash id of `req`, whose keys covered only the leading ids
        another request may share (`Engine.shared_keys_only`), and register its blocks past
        those keys as keying every id from its admission on would have: the full blocks of its
        first `num_tokens` tokens (those it was given blocks for: computed, and scheduled this
        step), at most its number of tokens, as every allocation registers. Called before a
        preemption of a policy that may swap: those blocks then enter the free queue keyed, and
        a swapped request registers every key again when swapped in, as when every id is keyed
        from the start. Exact since before its first preemption no lookup but the request's own
        could hit them, and it had none: the keys are not cached (no other request has the
        ids), so they register new, at the same positions."""
        keys = req.kv_block_keys
        req.num_shared_hash_ids = None  # (keys built for it again are whole)
        if type(keys) is not BlockKeys or keys.num_blocks == len(req.hash_ids) * req.hash_block_tokens // self.block_size:
            return  # (every id keyed already)
        whole = req.kv_block_keys = block_keys(req, self.block_size)
        held = self._held.get(req.id)
        if held is None:
            return
        if held.keys is keys:
            held.keys = whole
            keys.release()
        self._cache_full_blocks(req, held, min(num_tokens, req.num_tokens))

    def cache_full_blocks(self, req: Any, num_tokens: int) -> None:
        """Register the request's full keyed blocks covering its first `num_tokens` tokens."""
        held = self._held.get(req.id)
        if held is not None:
            self._cache_full_blocks(req, held, num_tokens)

    def cache_full_blocks_many(self, reqs_tokens: list[tuple[Any, int]], more_tokens: int,
                               last: list[int] | None = None) -> None:
        """`cache_full_blocks(req, n + min(more_tokens, last[i]))` for each (req, n), in order (a
        stretch's registrations: one call, and no Python call for a request that filled no
        block; `last`: as for `keys_conflict_many`)."""
        if not self.enable_prefix_caching:
            return
        if self._planned is not None and self._apply_planned(reqs_tokens, more_tokens, last):
            return
        held_of, bs = self._held, self.block_size
        items = []
        for i, (req, n) in enumerate(reqs_tokens):
            held = held_of.get(req.id)
            if held is None:
                continue
            k0 = held.num_keyed
            full = (n + (more_tokens if last is None or last[i] > more_tokens else last[i])) // bs
            keys = req.kv_block_keys
            if full <= k0 or keys is None:
                continue
            full = min(full, keys.num_blocks if type(keys) is BlockKeys else len(keys), k0 + held.num_plain)
            if full > k0:
                items.append((keys, held, k0, full))
        if not items:
            return
        if self._prefix.register_appends(items):  # (the usual case: all at once)
            return
        register = self._prefix.register
        for keys, held, k0, full in items:
            register(keys, held, k0, full)
            held.num_keyed = full
            held.num_plain -= full - k0

    def register_settled(self, req: Any, num_tokens: int) -> None:
        """`cache_full_blocks(req, num_tokens)` for a request of a stretch whose registrations the
        kept plan holds, ahead of the stretch's (a turn that left it before a next turn joins:
        `held_hits.settle_departed`). The plan less its item stays valid, as a plan less an
        item does (`_apply_planned`): kept so, or dropped if it was stale already."""
        held = self._held.get(req.id)
        if held is None:
            return
        planned, prefix = self._planned, self._prefix
        valid = planned is not None and planned[3] == prefix.num_inserts
        self._cache_full_blocks(req, held, num_tokens)
        if type(held.keys) is BlockKeys:  # (its next turn builds its keys from them, as after its release)
            self._recent_keys.keep(held.keys)
        if not valid:
            self._planned = None
            return
        lst, n, more, _, (plan, seen, groups), tokens, caps = planned
        j = next((j for j, item in enumerate(plan) if item[0] is held), None)  # (its item: one at most)
        if j is not None:
            groups.discard(plan[j][1])  # (the group it extended: another item may now)
            plan, tokens = plan[:j] + plan[j + 1:], tokens[:j] + tokens[j + 1:]
            caps = None if caps is None else caps[:j] + caps[j + 1:]
        self._planned = (lst, n, more, prefix.num_inserts, (plan, seen, groups), tokens, caps)

    def _apply_planned(self, reqs_tokens: list[tuple[Any, int]], more_tokens: int, last: list[int] | None) -> bool:
        """`cache_full_blocks_many` by the plan `keys_conflict_many` kept, if it was made for
        these requests and as many tokens or more (then trimmed: a stretch cut short), no key
        entered the index since, and each request holds the blocks it registers (as a
        stretch's allocation gives them: else the per-request pass would stop at its blocks).
        False, nothing done, otherwise. The plan is used once."""
        lst, n, more, inserts, planned, tokens, caps = self._planned
        if (lst is reqs_tokens and n < len(lst) and more == WHOLE and last is not None
                and inserts == self._prefix.num_inserts):
            # requests that joined since it was made (`keyed_join` appends them) and no check
            # of the stretch since: their items added now, as that check would (`_plan_whole`),
            # rather than every request's registrations worked out again below
            if not self._plan_whole(reqs_tokens, last):
                return False
            lst, n, more, inserts, planned, tokens, caps = self._planned
        self._planned = None
        gone = None  # per item of the plan: its request left the list since (`apply_rests`: a turn cut in its chunks)
        if lst is reqs_tokens and n > len(lst):
            present = {id(self._held.get(r.id)) for r, _ in lst}
            gone = [id(item[0]) not in present for item in planned[0]]
            if sum(gone) != n - len(lst):
                return False
            n = len(lst)
        if (lst is not reqs_tokens or n != len(lst) or more < more_tokens or inserts != self._prefix.num_inserts
                or (caps is None) != (last is None)):
            return False
        if more_tokens < more or gone:  # the stretch was cut: what its steps so far complete
            bs = self.block_size
            ends = ([(c + more_tokens) // bs for c in tokens] if caps is None else
                    [(c + (more_tokens if m > more_tokens else m)) // bs for c, m in zip(tokens, caps)])
            if gone:  # (no registration: a plan less an item is still valid, as a shorter one is)
                ends = [-1 if g else e for e, g in zip(ends, gone)]
            planned = self._prefix.trim_appends(planned, ends)
        for held, _, _, k0, k1, *_ in planned[0]:
            if k1 - k0 > held.num_plain:
                return False
        self._prefix.apply_appends(planned)
        self.num_planned_registrations += 1
        return True

    def _cache_full_blocks(self, req: Any, held: Held, num_tokens: int) -> None:
        k0 = held.num_keyed
        full = num_tokens // self.block_size
        if full <= k0:  # the usual case in decode: no block filled since
            return
        keys = req.kv_block_keys
        if not self.enable_prefix_caching or keys is None:
            return
        n = keys.num_blocks if type(keys) is BlockKeys else len(keys)  # (not a Python `__len__` call)
        if n < full:  # (`min(full, n, k0 + num_plain)` without the builtin's call)
            full = n
        if (c := k0 + held.num_plain) < full:
            full = c
        if full > k0:
            self._prefix.register(keys, held, k0, full)
            held.num_keyed = full
            held.num_plain -= full - k0
