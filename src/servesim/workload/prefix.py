"""Prefix block ids for generated requests (Mooncake-style chained ids).

hash_ids[k] names the whole prefix [0, (k+1) * block); two requests share KV for exactly the
blocks whose ids agree. Generated ids come from counters of one Workload that start far apart
(FOLLOW_UP_IDS: follow-up requests), so they never collide.
"""

from __future__ import annotations

#: First id of the counter for follow-ups (next turns, child calls), so that the ids of requests
#: that start a unit do not depend on how many follow-ups the simulation produced before them.
FOLLOW_UP_IDS = 1 << 48


class IdRanges(tuple):
    """Hash ids that are a few ranges of consecutive ints, carrying where each range starts.

    What `HashIds` makes: a turn's ids are its base's (a shared prefix, or the previous turn's
    whole context) plus one fresh range. A tuple for every reader (routers, the KV store, trace
    writers); the prefix cache also reads `bounds` = (0, b1, ..., len): ids[b_i:b_(i+1)] are
    consecutive, so a context's run keys are packed range by range without finding the ranges
    again, and a next turn is seen to extend its previous turn by comparing a range start per
    range instead of every id (`replica/block_keys.py`). The ranges need not be maximal (a
    fresh range may continue its base's last id)."""

    # (a tuple subclass cannot have slots of its own: `bounds` lives in the instance dict)

    def __new__(cls, ids, bounds: tuple[int, ...]):
        self = super().__new__(cls, ids)
        self.bounds = bounds
        return self

    def __reduce__(self):  # (pickled with its bounds, e.g. to a worker process)
        return IdRanges, (tuple(self), self.bounds)

    def extends(self, base: tuple) -> bool:
        """Do these ids start with all of `base`'s (another `IdRanges`)? True only if `base`'s
        ranges are this one's first ranges (same starts, same first ids); False does not mean
        they differ."""
        b = base.bounds
        m = len(b)
        if self.bounds[:m] != b:
            return False
        return all(self[i] == base[i] for i in b[:-1])


class HashIds:
    """Allocates fresh block ids and builds chains that extend a shared base."""

    def __init__(self, block_tokens: int, first_id: int = 0):
        self.block_tokens = block_tokens
        self._next = first_id

    def fresh(self, n: int) -> IdRanges:
        ids = IdRanges(range(self._next, self._next + n), (0, n) if n else (0,))
        self._next += n
        return ids

    def extend(self, base: tuple[int, ...], total_tokens: int) -> tuple[int, ...]:
        """Ids covering the full blocks of `total_tokens` tokens whose first len(base) blocks are
        `base` (the caller guarantees those tokens are identical) and the rest new (an
        `IdRanges` when `base` is one or empty)."""
        n = total_tokens // self.block_tokens
        if n <= len(base):
            if type(base) is IdRanges:  # (its ranges cut at n)
                return base if n == len(base) else IdRanges(base[:n], (*(b for b in base.bounds if b < n), n))
            return base[:n]
        fresh = self.fresh(n - len(base))
        if not base:
            return fresh
        if type(base) is not IdRanges:
            return base + fresh
        return IdRanges(base + fresh, base.bounds + (n,))
