"""A running pass's decodes allocated in bulk, as seen through `KVCacheManager` (kv_cache.py).

A running pass gives the decodes that lead its batch their one token each in one call
(`allocate_leading_decodes`, `allocate_decodes`): the outcome of `allocate_slots(req, 1)` for
each in order. A stepped step's end tells the cache what it knows of its decodes
(`token_advance.advance_and_tell`: `expected`), so the pass looks only at those that may need
a block or register one. Apart from the pool's other allocations because it is the pass a
stepped step pays per request under overload; a mixin so the manager keeps one interface for
schedulers.
"""

from __future__ import annotations

from itertools import filterfalse
from typing import Any

from servesim.replica.block_keys import BlockKeys
from servesim.replica.prefix_index import Held, PrefixIndex


class DecodeAllocation:
    """`KVCacheManager`'s bulk decode allocation (see the module docstring)."""

    # State owned by `KVCacheManager.__init__`.
    block_size: int
    enable_prefix_caching: bool
    num_free_blocks: int
    expected: tuple[list, tuple, list] | set | None
    passed: list | None
    _held: dict[Any, Held]
    _prefix: PrefixIndex

    def allocate_decodes(self, reqs: list[Any]) -> bool:
        """One more token for each request if all decode (have generated a token and have only
        it left to compute) and fit, and the keyed blocks their tokens complete register in
        bulk (`PrefixIndex.register_appends`); else no-op.

        This is the bulk form of calling `allocate_slots(req, 1)` for each in order (the outcome
        is the same when every call succeeds and the registrations are the usual case: they do
        not depend on the free queue's pops, see `register_appends`).
        """
        if not reqs:
            return True
        last = reqs[-1]  # the latest admitted: the one most likely still in its prompt
        if last.prompt_len + last.num_output_tokens != last.num_computed_tokens + 1:
            return False
        return self._allocate_decodes(reqs, True) == len(reqs)

    def allocate_leading_decodes(self, reqs: list[Any]) -> int:
        """`allocate_decodes` for the leading requests of `reqs` that decode, as many as fit;
        returns how many got their token (0: nothing changed). The same as the first calls of
        `allocate_slots(req, 1)` in order, when they all succeed (a running pass up to the
        first request still in its prompt: a Mooncake batch whose latest prompt is chunked)."""
        return self._allocate_decodes(reqs, False)

    def _allocate_decodes(self, reqs: list[Any], whole: bool) -> int:
        held = self._held
        bs = self.block_size
        grow = []  # the `Held` of those needing a block for their token
        reg = []
        prefix = self.enable_prefix_caching
        free = self.num_free_blocks
        n = len(reqs)
        told = self.expected
        if told is None:
            start, edges, rest = 0, (), reqs
        elif type(told) is set:
            # (a batch sorted again since it was told, Autellix's: those told to need nothing, in C,
            # the others looked at below in the allocation's order. Kept for the schedule's later
            # passes: nothing before the engine clears it changes those told of, but an eviction,
            # which takes the request out of the batch for the rest of the schedule)
            start, edges, rest = 0, (), filterfalse(told.__contains__, reqs)
        else:
            start, edges = self._known_decodes(reqs)
            rest = reqs[start:] if start else reqs
        for r in edges:  # (of the leading `start`, known to decode: only these may need a block or register one)
            h = held[r.id]
            nc = r.num_computed_tokens
            if nc >= (h.num_keyed + h.num_plain) * bs:
                if len(grow) == free:
                    if whole:
                        return 0
                    n = reqs.index(r)
                    rest = ()  # (the run stops here)
                    break
                grow.append(h)
            if prefix and (keys := r.kv_block_keys) is not None:  # (as below)
                nk = h.num_keyed
                if nk < (kn := keys.num_blocks if type(keys) is BlockKeys else len(keys)) and nk < (
                        full := (nc + 1) // bs):
                    reg.append((keys, h, nk, full if full < kn else kn))
        for r in rest:  # (no index kept: the first that stops the run is found once, by identity)
            nc = r.num_computed_tokens
            no = r.num_output_tokens
            if not no or r.prompt_len + no != nc + 1:
                if whole:
                    return 0
                n = reqs.index(r)
                break
            # Its blocks hold its computed tokens (paged KV), so only a token that starts a
            # block may need one more: the others skip the look-up (15 of 16 decodes at a
            # block size of 16; the loop is a stepped step's largest cost under overload)
            if nc % bs:
                h = None
            else:
                h = held[r.id]
                if nc >= (h.num_keyed + h.num_plain) * bs:
                    if len(grow) == free:  # (the first that does not fit: those before it decode)
                        if whole:
                            return 0
                        n = reqs.index(r)
                        break
                    grow.append(h)
            # this token completes keyed blocks (empty keys give kn = 0 below, so `is not
            # None` decides as `bool(keys)` would, without `BlockKeys.__bool__`'s Python call);
            # the keys first: a request without any (an Azure trace's) stops at one read;
            # `nk < kn` before the division: a decode past its keys (most of a Mooncake
            # answer's) stops there. Its blocks after this step hold nc + 1 tokens, so the
            # full ones are those tokens' (at most its keys').
            if prefix and (keys := r.kv_block_keys) is not None:
                if h is None:
                    h = held[r.id]
                nk = h.num_keyed
                if nk < (kn := keys.num_blocks if type(keys) is BlockKeys else len(keys)) and nk < (
                        full := (nc + 1) // bs):
                    reg.append((keys, h, nk, full if full < kn else kn))
        if not n or (reg and not self._prefix.register_appends(reg)):
            return 0
        if grow:
            self._pop_free(len(grow))
            for h in grow:
                h.num_plain += 1
        if self.passed is not None:
            self.passed = reqs[:n]  # (a copy: the scheduler's lists change before the step ends)
        return n  # (`register_appends` moved the registered blocks from plain to keyed)

    def _known_decodes(self, reqs: list[Any]) -> tuple[int, list]:
        """(m, edges): the leading m of `reqs` are the last step's decodes that go on, in their
        order, of which only `edges` start a block with this token (`expected`); (0, ()) if
        not so. Read once: the allocation after the one it was told for finds other states."""
        (decodes, gone, edges), self.expected = self.expected, None
        m = len(decodes) - len(gone)
        if m > len(reqs):
            return 0, ()
        a = k = 0  # (the decodes between two that finished: one C comparison of the same objects each)
        for r in gone:
            g = decodes.index(r, a)  # (found in C: one or two a step at most, in order)
            if decodes[a:g] != reqs[a - k:g - k]:
                return 0, ()
            a, k = g + 1, k + 1
        if decodes[a:] != reqs[a - k:m]:
            return 0, ()
        # One taken out since (preempted by recompute) and back is last: admissions append. If
        # it still decodes, its tokens are as they were (its blocks' count is read fresh).
        last = reqs[m - 1]
        if last.prompt_len + last.num_output_tokens != last.num_computed_tokens + 1:
            return 0, ()
        return m, edges
