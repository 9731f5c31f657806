"""Prefix block ids for generated requests (Mooncake-style chained ids).

hash_ids[k] names the whole prefix [0, (k+1) * block); two requests share KV for exactly the
blocks whose ids agree. Generated ids come from counters of one Workload that start far apart
(FOLLOW_UP_IDS: follow-up requests), so they never collide.
"""

from __future__ import annotations

#: First id of the counter for follow-ups (next turns, child calls), so that the ids of requests
#: that start a unit do not depend on how many follow-ups the simulation produced before them.
FOLLOW_UP_IDS = 1 << 48


class HashIds:
    """Allocates fresh block ids and builds chains that extend a shared base."""

    def __init__(self, block_tokens: int, first_id: int = 0):
        self.block_tokens = block_tokens
        self._next = first_id

    def fresh(self, n: int) -> tuple[int, ...]:
        ids = tuple(range(self._next, self._next + n))
        self._next += n
        return ids

    def extend(self, base: tuple[int, ...], total_tokens: int) -> tuple[int, ...]:
        """Ids covering the full blocks of `total_tokens` tokens whose first len(base) blocks are
        `base` (the caller guarantees those tokens are identical) and the rest new."""
        n = total_tokens // self.block_tokens
        if n <= len(base):
            return base[:n]
        return base + self.fresh(n - len(base))
