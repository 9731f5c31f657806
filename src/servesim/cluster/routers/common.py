"""Helpers shared by several routers: tie-broken argmin, uniform integers drawn in blocks, and
a router-side prefix-block index.

Not a policy (nothing registered here). The index is what "approximate" cache-aware routers
keep: the prefix block ids of the requests they sent to each replica, forgotten by LRU
capacity (GIE's per-pod LRU) or by age (Dynamo's `ApproxKvIndexer` TTL), never told what the
engine really evicted.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal, Sequence

import numpy as np

TieBreak = Literal["random", "first"]


def argmin_pick(cands: Sequence[int], keys: Sequence[float], tie_break: TieBreak,
                rng: "np.random.Generator | UniformInts") -> int:
    """The candidate with the smallest key; ties go to the first or to a uniform random one.

    The generator is drawn from only when there is a tie, so a tie-free run does not
    consume random numbers.
    """
    best = min(keys)
    if type(keys) is list and best == best:  # (C-level scans; `index` and `count` match by `==`, NaN aside)
        if tie_break == "first" or (n := keys.count(best)) == 1:
            return cands[keys.index(best)]
        j = keys.index(best)
        for _ in range(rng.integers(n)):  # the drawn one of the n tied, found by scans, not a list of them
            j = keys.index(best, j + 1)
        return cands[j]
    tied = [c for c, k in zip(cands, keys) if k == best]
    if len(tied) == 1 or tie_break == "first":
        return tied[0]
    return tied[int(rng.integers(len(tied)))]


def max_pick(cands: Sequence[int], scores: Sequence[float], rng: np.random.Generator) -> int:
    """The candidate with the highest score, uniform among ties (GIE max-score-picker:
    shuffle, then a stable sort by score)."""
    best = max(scores)
    tied = [c for c, s in zip(cands, scores) if s == best]
    return tied[0] if len(tied) == 1 else tied[int(rng.integers(len(tied)))]


class UniformInts:
    """`rng.integers(n)`, value for value, drawn from the generator's raw words in blocks.

    A least-requests router breaks a tie at nearly every arrival; one `Generator.integers`
    call costs 1.5-4 us of numpy's per-call overhead, this about 0.4 us. numpy draws a bounded
    integer below 2^32 by Lemire's method on 32-bit words, and PCG64 serves 32-bit words as
    the low then the high half of each 64-bit output; both are replayed here on words taken
    256 at a time with `random_raw` (tests/cluster/test_uniform_ints.py checks it against
    `integers`). The generator then runs ahead of what was used: whoever holds a
    `UniformInts` must draw nothing else from its generator. Generators other than a fresh
    PCG64 are left to `integers` itself; bounds above 2^32 (numpy draws those from 64-bit
    words) are refused.
    """

    BLOCK = 256  # 64-bit words drawn at a time

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        bits = getattr(rng, "bit_generator", None)  # (tests script generators without one)
        self._exact = type(bits) is np.random.PCG64 and not bits.state["has_uint32"]
        self._words: list[int] = []
        self._i = 0

    def integers(self, n: int) -> int:
        """A uniform integer in [0, n) (n >= 1), the one `rng.integers(n)` would return."""
        if n > 0x100000000:
            raise ValueError(f"UniformInts draws below at most 2^32, not {n}")
        if not self._exact:
            return int(self._rng.integers(n))
        if n == 1:
            return 0  # (numpy draws nothing for a single value)
        threshold = -1
        while True:  # (the words read here, not through a call per word: a draw at nearly every arrival)
            i = self._i
            if i == len(self._words):
                self._refill()
                i = 0
            self._i = i + 1
            m = self._words[i] * n
            left = m & 0xFFFFFFFF
            if left >= n:
                return m >> 32
            # Lemire's rejection: only the lowest (2^32 mod n) leftovers are redrawn (< n: known
            # only now, as numpy computes it)
            if threshold < 0:
                threshold = (0x100000000 - n) % n
            if left >= threshold:
                return m >> 32

    def _refill(self) -> None:
        raw = self._rng.bit_generator.random_raw(self.BLOCK)
        halves = np.empty(2 * self.BLOCK, dtype=np.uint64)
        halves[0::2] = raw & 0xFFFFFFFF  # (PCG64's 32-bit draws: low half first)
        halves[1::2] = raw >> 32
        self._words = halves.tolist()


class BlockIndex:
    """Per-replica sets of prefix block ids with LRU capacity and/or a time to live.

    `add` inserts a request's blocks in prefix order (so, as in GIE's per-pod LRU, the
    first block of a request is the least recent of its blocks); `match` counts how many
    leading blocks of a request a replica holds.
    """

    def __init__(self, ttl_s: float | None = None) -> None:
        self.ttl_s = ttl_s
        self._blocks: dict[int, OrderedDict[int, float]] = {}  # replica -> block id -> last add time

    def add(self, replica: int, hash_ids: Sequence[int], now_s: float,
            capacity_blocks: int | None = None) -> None:
        blocks = self._blocks.setdefault(replica, OrderedDict())
        for h in hash_ids:
            blocks[h] = now_s
            blocks.move_to_end(h)
        if capacity_blocks is not None:
            while len(blocks) > capacity_blocks:
                blocks.popitem(last=False)
        self._expire(blocks, now_s)

    def match(self, replica: int, hash_ids: Sequence[int], now_s: float) -> int:
        """Leading blocks of `hash_ids` that `replica` holds (and that have not expired)."""
        blocks = self._blocks.get(replica)
        if not blocks:
            return 0
        self._expire(blocks, now_s)
        n = 0
        for h in hash_ids:
            if h not in blocks:
                break
            n += 1
        return n

    def size(self, replica: int) -> int:
        """Blocks indexed for `replica` (Dynamo's tree size, its tie-breaker)."""
        return len(self._blocks.get(replica, ()))

    def _expire(self, blocks: OrderedDict[int, float], now_s: float) -> None:
        # entries are in add-time order, so expired ones sit at the front
        if self.ttl_s is None:
            return
        while blocks and now_s - next(iter(blocks.values())) > self.ttl_s:
            blocks.popitem(last=False)
