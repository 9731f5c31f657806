"""Per-slot state of the cached KV blocks of one prefix-cache group (extent), in flat typed arrays.

A group holds the blocks of a stretch of consecutive block positions (slot = position),
registered under the key runs its `diags` list (`block_keys.py`): a request registering a
prefix extends the group it last registered into when that ends where it continues, so one
request's prefix, and a conversation's growing context, is a handful of groups rather than
hundreds of block objects. Each position of a group belongs to one run, and every cached block
of a run lives in the group the cache's index maps the run to. For slot s: `ref[s - lo]` is
the reference count of the block registered there, or -1 when none is (the key is not
cached); `stamp[s - lo]` is the stamp of the free-queue entry holding the block while its count
is 0 (lazy deletion: a block hit from the free queue gets stamp 0, so the entry no longer
matches it), else 0.

Each method works on a range of slots with slices, falling back to a per-slot loop only
when the range is mixed (some slots cached and some not, or differing counts).

`ref` and `stamp` are typed arrays (`array('i')`, `array('q')`), not lists: a Mooncake prompt's
group is hundreds of slots (32 per 512-token hash block), and its usual operations (fill a
range with one value, check that a range holds one value) are then C loops over machine
integers (a slice assignment or equality of same-typed arrays) rather than a reference count
and an int comparison per slot: about 2-3x faster per slot (`Group.evict`, `release`,
`append_held` were about 12 % of a vllm Mooncake cell).
"""

from __future__ import annotations

from array import array
from collections import Counter
from itertools import repeat
from operator import add, sub
from typing import Hashable

import numpy as np

# One-slot arrays, repeated into the fills of a range (`NONE * k`: k slots not cached), inline
# where they are used (a helper call per fill was 5 % of a vllm Mooncake cell).
NONE, ONE = array("i", [-1]), array("i", [1])  # reference counts: not cached, held once
NO_STAMP = array("q", [0])

# Searching a range for one value: `array.count` and `array.index` compare slot by slot through
# Python ints, and a stamp is a large int (a new object per slot): about 25 ns a slot, and a
# free-queue entry partly hit since (a conversation's freed context, part of it taken back by
# its next turn) is hundreds of slots. numpy reads the same bytes in C for about 1 us a call
# (`evict`); shorter ranges keep array's loop. (An entry a hit emptied is not searched at all:
# `FreeQueue` keeps each entry's live count.)
_NP_MIN = 48
_DTYPES = {"i": np.int32, "q": np.int64}


def count_of(r: array, v: int) -> int:
    """`r.count(v)` for a typed array (a range of a group's counts), without its Python int per
    slot where it can: a range holding one value (the usual case: a context held once, or free)
    is known by one comparison in C, and a long mixed one is counted by numpy (see `_NP_MIN`).
    (A sessions cell's hit ranges are hundreds of slots: `array.count` was about 5 % of vllm
    sessions at 1 replica.)"""
    n = len(r)
    if not n:
        return 0
    first = r[0]
    if r == array(r.typecode, [first]) * n:
        return n if first == v else 0
    if n < _NP_MIN:
        return r.count(v)
    return int(np.count_nonzero(np.frombuffer(r, dtype=_DTYPES[r.typecode]) == v))


class Group:
    """The registered blocks of one extent of positions (see the module docstring)."""

    __slots__ = ("runs", "num_runs", "diags", "lo", "ref", "stamp", "num_cached")

    def __init__(self, s0: int) -> None:
        # The index maps `num_runs` run keys here, listed in `diags` in order: [diagonal, piece] for
        # keys recorded by diagonal (read back from the piece, not listed: a generated conversation's
        # group has a key per slot, hundreds), [None, count] for the next `count` keys of `runs`, the
        # others (a trace's, Mooncake's), which are listed (prefix_diagonals.py)
        self.runs: list[Hashable] = []
        self.num_runs = 0
        self.diags: list[list] = []
        self.lo = s0
        self.ref = array("i")
        self.stamp = array("q")
        self.num_cached = 0

    @property
    def hi(self) -> int:
        """End of the slots covered."""
        return self.lo + len(self.ref)

    def _cover(self, s0: int, s1: int) -> None:
        """Grow the arrays to cover slots [s0, s1)."""
        if s0 < self.lo:
            k = self.lo - s0
            self.ref[:0] = NONE * k
            self.stamp[:0] = NO_STAMP * k
            self.lo = s0
        k = s1 - self.lo - len(self.ref)
        if k > 0:
            self.ref += NONE * k
            self.stamp += NO_STAMP * k

    def num_leading_cached(self, s0: int, s1: int) -> int:
        """How many of slots s0, s0+1, ... (up to s1) are cached before the first that is not."""
        i = s0 - self.lo
        if i < 0:
            return 0
        if self.num_cached == len(self.ref):  # every slot cached (a conversation's context, usually): no scan
            a, c = s1 - self.lo, self.num_cached
            m = (c if c < a else a) - i
            return 0 if 0 > m else m
        r = self.ref[i:s1 - self.lo]
        return r.index(-1) if -1 in r else len(r)

    def any_cached(self, s0: int, s1: int) -> bool:
        r = self.ref[max(s0 - self.lo, 0):max(s1 - self.lo, 0)]
        return bool(r) and max(r) >= 0

    def num_free(self, s0: int, s1: int) -> int:
        """Cached blocks among [s0, s1) with count 0 (in the free queue)."""
        return count_of(self.ref[s0 - self.lo:s1 - self.lo], 0)

    def append_held(self, n: int) -> None:
        """Slots [hi, hi + n) get new blocks held once (`register` of them, without the checks)."""
        self.ref += ONE * n
        self.stamp += NO_STAMP * n
        self.num_cached += n

    def register(self, s0: int, s1: int) -> list[int]:
        """A request computes keys [s0, s1): each key not cached gets a new block held once;
        returns the slots that were cached already, as ranges (first, end) of consecutive slots
        (the request's copies stay unregistered: `copies.py`)."""
        self._cover(s0, s1)
        i, j = s0 - self.lo, s1 - self.lo
        ref = self.ref
        r = ref[i:j]
        if r == NONE * (j - i):  # the usual case: none cached (stamps are 0)
            ref[i:j] = ONE * (j - i)
            self.num_cached += j - i
            return []
        c = r.count(-1)
        if not c:  # all cached: all copies (a policy computing a cached context again)
            return [(s0, s1)]
        if j - i >= _NP_MIN:  # (a long mixed range, a context partly evicted: the slots in C)
            return self._register_mixed(r, i, j, c)
        dups: list[tuple[int, int]] = []
        for k in range(i, j):
            if ref[k] < 0:
                ref[k] = 1
                self.num_cached += 1
            elif dups and dups[-1][1] == k + self.lo:  # (the copy before it: one range)
                dups[-1] = (dups[-1][0], k + self.lo + 1)
            else:
                dups.append((k + self.lo, k + self.lo + 1))
        return dups

    def _register_mixed(self, r: array, i: int, j: int, c: int) -> list[tuple[int, int]]:
        """`register`'s per-slot loop over slots [i, j) (offsets; `r`: a copy of their counts,
        `c` of them not cached) with numpy: the same counts and copy ranges."""
        a = np.frombuffer(r, dtype=np.int32)
        cached = a >= 0
        self.ref[i:j] = array("i", np.where(cached, a, np.int32(1)).tobytes())
        self.num_cached += c
        edges = np.flatnonzero(np.diff(cached, prepend=False, append=False)) + (i + self.lo)
        return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))

    def hit(self, s0: int, s1: int, queued: dict | None = None) -> int:
        """A request takes a reference on the cached blocks [s0, s1); returns how many left
        the free queue (their count was 0). `queued`: the queue's entries by stamp
        (`FreeQueue.entries`), whose live counts lose those blocks."""
        i, j = s0 - self.lo, s1 - self.lo
        r = self.ref[i:j]
        v = r[0]
        if r == array("i", [v]) * (j - i):  # the usual case: one count over the range
            self.ref[i:j] = array("i", [v + 1]) * (j - i)
            if v:
                return 0
            if queued is not None:
                _leave(queued, self.stamp[i:j])
            self.stamp[i:j] = NO_STAMP * (j - i)
            return j - i
        z = r.count(0)
        if z:
            stamp = self.stamp
            for k in range(i, j):
                if r[k - i] == 0:
                    if queued is not None:  # (its entry holds one block fewer)
                        queued[stamp[k]][4] -= 1
                    stamp[k] = 0
        self.ref[i:j] = array("i", map(add, r, repeat(1)))
        return z

    def release(self, s0: int, s1: int, stamp: int) -> int:
        """A request drops its reference on blocks [s0, s1); those whose count reaches 0 get
        `stamp` (one free-queue entry holds them); returns how many."""
        i, j = s0 - self.lo, s1 - self.lo
        r = self.ref[i:j]
        v = r[0]
        if r == array("i", [v]) * (j - i):  # the usual case: one count over the range
            self.ref[i:j] = array("i", [v - 1]) * (j - i)
            if v != 1:
                return 0
            self.stamp[i:j] = array("q", [stamp]) * (j - i)
            return j - i
        r = array("i", map(sub, r, repeat(1)))
        self.ref[i:j] = r
        z = r.count(0)
        if z:
            st = self.stamp
            for k in range(i, j):
                if r[k - i] == 0:
                    st[k] = stamp
        return z

    def evict(self, s0: int, s1: int, stamp: int, n: int, live: int) -> tuple[int, int]:
        """Evict up to `n` blocks of the free-queue entry (`stamp`, slots [s0, s1), `live` of
        them still in it), last slot first, skipping slots no longer in it; returns (blocks
        evicted, new end slot)."""
        i, j = s0 - self.lo, s1 - self.lo
        st, ref = self.stamp, self.ref
        k = j - i if j - i < n else n
        # The usual case: the last k slots are all still in the entry: known when all its slots
        # are (no hit since: 6,418 of 6,444 evictions of vllm mooncake at one replica), else
        # checked over those k only (an allocation often takes a block or two of hundreds).
        if live == j - i or st[j - k:j] == array("q", [stamp]) * k:
            ref[j - k:j] = NONE * k
            st[j - k:j] = NO_STAMP * k
            self.num_cached -= k
            return k, s1 - k
        # Else find the slots still in the entry, last first, by C-level searches (an entry
        # whose blocks a next turn hit since is hundreds of slots and none of them).
        seg = st[i:j]
        if len(seg) < _NP_MIN:
            c = seg.count(stamp)
            if not c:
                return 0, s0
            k = c if c < n else n
            rev = seg[::-1]
            x = -1
            for _ in range(k):
                x = rev.index(stamp, x + 1)
                st[j - 1 - x] = 0
                ref[j - 1 - x] = -1
            first = j - 1 - x
        else:  # (the same slots found by numpy: see `_NP_MIN`)
            where = np.flatnonzero(np.frombuffer(seg, dtype=np.int64) == stamp)
            if not len(where):
                return 0, s0
            k = min(n, len(where))
            for x in where[len(where) - k:].tolist():
                st[i + x] = 0
                ref[i + x] = -1
            first = i + int(where[len(where) - k])
        self.num_cached -= k
        # the scan stops at the n-th slot evicted, else runs through the entry's first slot
        return k, (first + self.lo) if k == n else s0


def _leave(queued: dict, stamps: array) -> None:
    """Blocks carrying `stamps` leave the free queue: their entries' live counts drop (one
    entry's, the usual case: a conversation's context freed at once and hit by its next turn)."""
    t = stamps[0]
    if stamps == array("q", [t]) * len(stamps):
        queued[t][4] -= len(stamps)
    else:
        for t, c in Counter(stamps).items():
            queued[t][4] -= c
