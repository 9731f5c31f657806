"""Freeing of `KVCacheManager` (kv_cache.py): blocks going back to the LRU free queue.

A request's blocks leave it when it finishes or is removed (`free`), when it is preempted by
recompute (`free_preempted`: its unique computed blocks become a run it can hit again, see
kv_cache.py's docstring), or are kept under a transfer key (`detach`). The order in which they
enter the free queue decides what is evicted first, which is why this is its own module: it
is where vLLM's tail-first freeing order is reproduced. A mixin over the manager's state
(`_held`, the queue, the free count), as allocation pops what these methods push.
"""

from __future__ import annotations

from itertools import repeat
from operator import add, sub
from typing import Any, Hashable

from servesim.replica.block_keys import BlockKeys
from servesim.replica.copies import copies_within
from servesim.replica.free_queue import FreeQueue
from servesim.replica.prefix_groups import ONE, Group, count_of
from servesim.replica.prefix_index import Held
from servesim.replica.recent_keys import RecentKeys


class BlockRelease:
    """`KVCacheManager`'s freeing of blocks (see the module docstring)."""

    # State owned by `KVCacheManager.__init__`.
    block_size: int
    enable_prefix_caching: bool
    num_free_blocks: int
    _held: dict[Any, Held]
    _queue: FreeQueue
    _tails: dict
    _recent_keys: RecentKeys

    def free(self, req_id: Any) -> None:
        """Release a request's blocks; tail blocks enter the free queue first (evicted first)."""
        if self._tails:
            self._tails.pop(req_id, None)  # a preempted request removed while waiting
        held = self._held.pop(req_id, None)
        if held is not None:
            self._push_plain(held.num_plain)
            self._free_keyed(held)
            if type(held.keys) is BlockKeys:
                self._recent_keys.keep(held.keys)
                held.keys.release()

    def free_all(self, req_ids: list[Any]) -> None:
        """`free` of each id, in order. The plain blocks of consecutive requests that hold no
        prefix keys enter the queue's tail as one entry, as one request at a time leaves them
        (each push merges into the entry before it); anything else is freed one by one."""
        if type(self).free is not BlockRelease.free or self._tails:
            for rid in req_ids:
                self.free(rid)
            return
        held_of = self._held
        plain = 0
        for rid in req_ids:
            held = held_of.get(rid)
            if held is not None and not held.segs and type(held.keys) is not BlockKeys:
                del held_of[rid]
                plain += held.num_plain
            else:
                self._push_plain(plain)  # (what the requests before it freed goes first)
                plain = 0
                self.free(rid)
        self._push_plain(plain)

    def blocks_freed(self, req_ids: list[Any], dropped: dict) -> list[int]:
        """The free blocks `free` of each request would add, freeing them in this order after
        those `dropped` counts (a stretch through finishes processes its finishes late, and
        logs the blocks in use at each step): its plain blocks and copies, and the keyed
        blocks whose last reference it drops (a prefix block another request holds stays in
        use). `dropped` (group -> references dropped per slot by the earlier ones) is updated;
        nothing else changes."""
        out = []
        for rid in req_ids:
            held = self._held[rid]
            n = held.num_plain
            dups = held.dups
            for g, p0, p1 in held.segs:
                i, j = p0 - g.lo, p1 - g.lo
                ref = g.ref[i:j]
                if dups is not None and (inside := copies_within(dups, p0, p1)):
                    n += _freed_with_copies(g, ref, p0, inside, dropped)
                    continue
                if ref == ONE * (j - i):  # (the usual case: blocks only this request holds)
                    n += j - i
                    continue
                # shared blocks: freed by the last holder to leave (references left, per slot)
                prior = dropped.get(g)
                if prior is None:  # (the usual case: the first of those leaving to hold some)
                    n += count_of(ref, 1)
                    dropped[g] = ((i, j),)
                elif type(prior) is tuple and len(prior) < _MAX_RANGES:  # (the ranges earlier leavers dropped)
                    n += _left_one(ref, i, j, prior)
                    dropped[g] = (*prior, (i, j))
                else:  # (per slot: many leavers, Mooncake's shared first blocks, or one with copies)
                    prior = _drops(g, dropped)
                    left = list(map(sub, ref, prior[i:j]))
                    n += left.count(1)
                    prior[i:j] = map(add, prior[i:j], repeat(1, j - i))
            out.append(n)
        return out

    def free_grown(self, req_id: Any, num_new_blocks: int) -> None:
        """Release a request without prefix keys that needed `num_new_blocks` more plain blocks
        since its last allocation (a fast-forwarded stretch's growth, never allocated): as
        allocating them and then freeing it. Freed blocks are plain, entering the queue's tail,
        and pops take its head, so pushing first leaves the queue as stepping's order does
        (the caller checked that stepping had the blocks)."""
        held = self._held[req_id]
        held.num_plain += num_new_blocks
        self.free(req_id)
        self.num_free_blocks -= num_new_blocks
        self._queue.pop(num_new_blocks)

    def free_preempted(self, req: Any) -> None:
        """Release a request preempted by recompute (call before resetting its progress): its
        full computed blocks past its keyed prefix go to the free queue as a run tagged with
        its id, which it can hit when admitted again (see kv_cache.py's docstring)."""
        held = self._held.get(req.id)
        start = len(req.kv_block_keys or ())
        full = min(req.num_computed_tokens, req.num_tokens) // self.block_size
        if held is None or not self.enable_prefix_caching or full <= start or held.num_keyed != start:
            self.free(req.id)
            return
        del self._held[req.id]
        unique = full - start
        self._push_plain(held.num_plain - unique)  # partial or uncomputed blocks: evicted first
        self._queue.push_tail(req.id, unique)
        self.num_free_blocks += unique
        self._free_keyed(held)

    def _free_keyed(self, held: Held) -> None:
        """Drop the request's references, last position first; each segment's blocks whose
        count reaches 0 enter the free queue as one entry (an unregistered copy as a plain block)."""
        dups = held.dups
        # (a segment outside the copies' span is released whole: a Mooncake prompt's copies
        # are its first hash blocks, its own segment hundreds of slots)
        lo, hi = (dups[0][0], dups[-1][1]) if dups is not None else (0, 0)
        for g, p0, p1 in reversed(held.segs):
            inside = copies_within(dups, p0, p1) if p0 < hi and lo < p1 else None
            if not inside:
                self._release(g, p0, p1)
                continue
            # Split the segment at the copies, last first; a range of copies (a run of
            # consecutive ones: `copies.py`) enters the queue as one plain entry (as one at a
            # time would, merged). The usual case: one range (a policy computing a whole cached
            # context again without looking up its hits).
            top = p1
            for a, b in reversed(inside):
                if top > b:
                    self._release(g, b, top)
                self._push_plain(b - a)
                top = a
            if top > p0:
                self._release(g, p0, top)

    def _release(self, group: Group, s0: int, s1: int) -> None:
        self.num_free_blocks += self._queue.release(group, s0, s1)

    def detach(self, req_id: int, key: Hashable) -> None:
        """Keep a request's blocks under `key` (its KV is being sent to another replica): the
        request can leave the scheduler while its blocks stay held until `free(key)`."""
        held = self._held.pop(req_id, None)
        if held is not None:
            self._held[key] = held

    def _push_plain(self, n: int) -> None:
        if n > 0:
            self._queue.push_plain(n)
            self.num_free_blocks += n


_MAX_RANGES = 8  # (drops kept as ranges up to this many per group, then per slot: `_left_one` is quadratic in them)


def _left_one(ref, i: int, j: int, prior: tuple) -> int:
    """Slots of `ref` (the group's counts over its slots [i, j)) with one reference left after
    the earlier leavers' drops, one per range of `prior` covering the slot: counted piece by
    piece between the ranges' ends, in C (a next turn that took back its previous turn's
    blocks, `held_hits.take_back`, leaves after it over hundreds of slots)."""
    cuts = sorted({i, j, *(x for a, b in prior for x in (a, b) if i < x < j)})
    n = 0
    for a, b in zip(cuts, cuts[1:]):
        c = sum(1 for a2, b2 in prior if a2 <= a and b <= b2)
        n += count_of(ref[a - i:b - i], c + 1)
    return n


def _drops(g: Group, dropped: dict) -> list[int]:
    """The references dropped per slot of `g` so far (`blocks_freed`): kept as the ranges of
    slots the requests before dropped, expanded to a list past `_MAX_RANGES` of them or when one
    with copies comes."""
    drops = dropped.get(g)
    if type(drops) is list:
        return drops
    arr = [0] * len(g.ref)
    for i, j in drops or ():
        arr[i:j] = map(add, arr[i:j], repeat(1, j - i))
    dropped[g] = arr
    return arr


def _freed_with_copies(g: Group, ref: list[int], p0: int, inside: list[tuple[int, int]], dropped: dict) -> int:
    """`blocks_freed` of one segment holding copies (plain blocks of the request's own at the
    positions of the ranges `inside` it; the group's slots there are not its): each copy is
    freed, and each slot of the group between them as in `blocks_freed`'s shared case (freed
    if this request holds its last reference; one reference dropped). A range at a time, as
    list operations in C: a next turn of a sessions cell under sarathi holds copies of most
    of its context (hundreds of slots), which a loop per slot walked at every finish counted."""
    drops = _drops(g, dropped)
    n = 0
    q, lo, end = p0, g.lo, p0 + len(ref)
    for a, b in (*inside, (end, end)):  # (ascending, disjoint, clipped to the segment: `copies_within`)
        if a > q:  # the group's slots [q, a)
            i, j = q - lo, a - lo
            d = drops[i:j]
            if d.count(0) == j - i:  # (the usual case: no earlier leaver dropped a reference there)
                n += count_of(ref[q - p0:a - p0], 1)
                drops[i:j] = [1] * (j - i)
            else:
                n += list(map(sub, ref[q - p0:a - p0], d)).count(1)
                drops[i:j] = map(add, d, repeat(1, j - i))
        n += b - a
        q = b
    return n
