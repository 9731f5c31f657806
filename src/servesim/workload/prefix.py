"""Prefix block ids for generated requests (Mooncake-style chained ids).

hash_ids[k] names the whole prefix [0, (k+1) * block); two requests share KV for exactly the
blocks whose ids agree. Generated ids come from counters of one Workload that start far apart
(FOLLOW_UP_IDS: follow-up requests), so they never collide.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from itertools import chain
from operator import add, sub

#: First id of the counter for follow-ups (next turns, child calls), so that the ids of requests
#: that start a unit do not depend on how many follow-ups the simulation produced before them.
FOLLOW_UP_IDS = 1 << 48


class IdRanges(Sequence):
    """Hash ids that are a few ranges of consecutive ints, kept as the ranges themselves.

    What `HashIds` makes: a turn's ids are its base's (a shared prefix, or the previous turn's
    whole context) plus one fresh range. They are stored as `bounds` = (0, b1, ..., len) and
    `firsts` (the first id of each range: ids[b_i + j] = firsts[i] + j), so a turn costs a few
    ints however long its history: as a tuple, each turn copied its whole history's ids (twice)
    and held one int object per id, most of a multi-turn run's memory (34 of 44 MB traced at
    the end of 4,000 sessions requests). Readers see an immutable sequence of ints that equals,
    hashes and compares as the tuple of the same ids (routers, the KV store and trace writers
    iterate, slice and index it); the prefix cache reads the ranges (`replica/block_keys.py`):
    a context's run keys are packed range by range, and a next turn is seen to extend its
    previous turn by comparing its first ranges instead of every id. The ranges need not be
    maximal (a fresh range may continue its base's last id)."""

    __slots__ = ("bounds", "firsts")

    def __init__(self, ids, bounds: tuple[int, ...]):
        """From the ids themselves (ids[b_i:b_(i+1)] consecutive ints) and their ranges."""
        self.bounds = tuple(bounds)
        self.firsts = tuple(ids[b] for b in self.bounds[:-1])

    @classmethod
    def of_ranges(cls, firsts: tuple[int, ...], bounds: tuple[int, ...]) -> "IdRanges":
        self = object.__new__(cls)
        self.bounds = bounds
        self.firsts = firsts
        return self

    def __reduce__(self):  # (pickled as its ranges, e.g. to a worker process)
        return IdRanges.of_ranges, (self.firsts, self.bounds)

    def __len__(self) -> int:
        return self.bounds[-1]

    def _ranges(self):
        b = self.bounds
        return map(range, self.firsts, map(add, self.firsts, map(sub, b[1:], b)))

    def __iter__(self):
        return chain.from_iterable(self._ranges())

    def __reversed__(self):
        return chain.from_iterable(map(reversed, reversed(list(self._ranges()))))

    def __contains__(self, x) -> bool:
        return any(x in r for r in self._ranges())

    def __getitem__(self, i):
        b = self.bounds
        n = b[-1]
        if type(i) is slice:
            start, stop, step = i.indices(n)
            if step != 1:
                return tuple(self)[i]
            if stop <= start:
                return IdRanges.of_ranges((), (0,))
            if start == 0 and stop == n:
                return self
            r0 = bisect_right(b, start) - 1
            r1 = bisect_left(b, stop)  # ranges r0 .. r1 - 1 hold [start, stop)
            firsts = (self.firsts[r0] + start - b[r0], *self.firsts[r0 + 1:r1])
            return IdRanges.of_ranges(firsts, (0, *(x - start for x in b[r0 + 1:r1]), stop - start))
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("IdRanges index out of range")
        r = bisect_right(b, i) - 1
        return self.firsts[r] + i - b[r]

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __eq__(self, other) -> bool:
        if type(other) is IdRanges:
            if self.bounds == other.bounds and self.firsts == other.firsts:
                return True
            return len(self) == len(other) and tuple(self) == tuple(other)
        if isinstance(other, tuple):
            return len(self) == len(other) and tuple(self) == other
        return NotImplemented

    def __lt__(self, other) -> bool:
        return tuple(self) < tuple(other)

    def __le__(self, other) -> bool:
        return tuple(self) <= tuple(other)

    def __gt__(self, other) -> bool:
        return tuple(self) > tuple(other)

    def __ge__(self, other) -> bool:
        return tuple(self) >= tuple(other)

    def __add__(self, other) -> tuple:
        return tuple(self) + tuple(other)

    def __radd__(self, other) -> tuple:
        return tuple(other) + tuple(self)

    def __repr__(self) -> str:
        return repr(tuple(self))

    def extends(self, base: "IdRanges") -> bool:
        """Do these ids start with all of `base`'s (another `IdRanges`)? True only if `base`'s
        ranges are this one's first ranges (same starts, same first ids); False does not mean
        they differ."""
        b = base.bounds
        return self.bounds[:len(b)] == b and self.firsts[:len(b) - 1] == base.firsts


class HashIds:
    """Allocates fresh block ids and builds chains that extend a shared base."""

    def __init__(self, block_tokens: int, first_id: int = 0):
        self.block_tokens = block_tokens
        self._next = first_id

    def fresh(self, n: int) -> IdRanges:
        ids = IdRanges.of_ranges((self._next,) if n else (), (0, n) if n else (0,))
        self._next += n
        return ids

    def extend(self, base, total_tokens: int):
        """Ids covering the full blocks of `total_tokens` tokens whose first len(base) blocks are
        `base` (the caller guarantees those tokens are identical) and the rest new (an
        `IdRanges` when `base` is one or empty: a few ints, not a copy of `base`)."""
        n = total_tokens // self.block_tokens
        m = len(base)  # (once: len() of an `IdRanges` is a Python call)
        if n <= m:
            return base if n == m else base[:n]  # (an `IdRanges`' ranges cut at n)
        fresh = self.fresh(n - m)
        if not m:
            return fresh
        if type(base) is not IdRanges:
            return tuple(base) + tuple(fresh)
        return IdRanges.of_ranges(base.firsts + fresh.firsts, base.bounds + (n,))
