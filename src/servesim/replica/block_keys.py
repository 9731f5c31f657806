"""A request's prefix keys at the engine's block size, kept as runs of the trace's hash blocks.

`hash_ids[m]` identifies tokens [0, (m+1)*H) (H = `hash_block_tokens`); a KV block ending at
token e lies in hash block m = (e-1)//H, so `(hash_ids[m], e)` identifies tokens [0, e) for any
block size. The KV blocks under one hash id form a contiguous run of positions (H/bs of them,
e.g. 32 for Mooncake's 512-token hashes and 16-token blocks), so the prefix cache indexes runs
(`run_keys`: (hash id, first position)) rather than blocks; the per-block key tuple is only
built when a policy asks for it (sequence access), and `block_idents` gives a cheaper per-block
identity (the run key repeated over its run) for the radix cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate, chain, repeat
from operator import sub
from typing import Any

import numpy as np

from servesim.workload.prefix import FOLLOW_UP_IDS, IdRanges

# A run key packs (id, first position) into one int: fold(id) * RUN_KEY_BASE + position, one-to-one
# as positions are < 2**32 < RUN_KEY_BASE. Why not id << 32 | position: a Python int hashes to
# itself modulo 2**61 - 1, so the dict slot of `id << 32 | position` came from the position
# alone (the id only reaches the probe sequence after several perturbations) and every
# request's key at one position collided (the index holds one key per block on sessions).
# The + 1 puts the id in the low bits too, and keeps a chain of consecutive ids at
# consecutive positions in nearby slots: dict inserts, lookups and removals about 2x faster.
RUN_KEY_BASE = (1 << 32) + 1
# The id packed is `fold(id)`, not the id: follow-up ids (`FOLLOW_UP_IDS` = 2**48 on, `HashIds`'
# second counter) packed as they are make keys of about 2**80, three 30-bit digits, past a C
# long: every hash of one loops over three digits and `key_steps` cannot use `range` for them
# (a sessions turn: about 100 k instructions of a request's 1.1 M, sess28). `fold` swaps the
# first 2**28 of them with the negative ids [-2**28, 0), in order (F + j <-> j - 2**28: keys of
# two digits, and the same low bits as F + j's, since F = 2**48: in reverse order a range's keys
# shared their dict slot, +0.8 % instructions), and keeps every other id: one-to-one (it is its
# own inverse), so keys stay one-to-one and the index's answers, which read keys only by
# equality and hash (dicts by insertion order, sets for membership), are the same. The ids
# themselves are not changed: routers, the KV store and trace writers read them.
_FOLD = 1 << 28
_FOLD_LO, _FOLD_HI = FOLLOW_UP_IDS, FOLLOW_UP_IDS + _FOLD  # [lo, hi) <-> [-_FOLD, 0)
_FOLD_BY = FOLLOW_UP_IDS + _FOLD
_C_LONG = 1 << 63  # ints a `range` iterates as C longs (`key_steps`)
_ID_LIMIT = 1 << 30  # ids packed with numpy: id * RUN_KEY_BASE + position must fit an int64
_RANGE_LIMIT = 1 << 62  # ids split into ranges with numpy (`pack_ranges`): their differences fit an int64


class BlockKeys(Sequence):
    """The keys `(hash_ids[(e-1)//H], e)` of a request's first `len(self)` KV blocks (e = end
    token), as runs: run i holds positions [starts[i], ends[i]) under key `run_keys[i]`."""

    __slots__ = ("run_keys", "starts", "ends", "_ids", "num_blocks", "_block_size", "_tuple", "_idents")

    def __init__(self, hash_ids: Sequence, hash_block_tokens: int, block_size: int) -> None:
        H = hash_block_tokens
        # len(self), read as an attribute on hot paths (len() of a BlockKeys is a Python call)
        # (an `IdRanges`' length read from its bounds: its `__len__` is a Python call)
        num_ids = hash_ids.bounds[-1] if type(hash_ids) is IdRanges else len(hash_ids)
        self.num_blocks = n = num_ids * H // block_size
        # hash block m holds the positions p with m*H < (p+1)*bs <= (m+1)*H: [m*H//bs, (m+1)*H//bs)
        if H % block_size == 0:  # the usual case: H/bs blocks per hash id, no empty hash block
            # No copies: a request keeps its keys for its lifetime, and a copy per block (ids,
            # starts, ends, packed keys) was most of a multi-turn run's memory.
            # (an `IdRanges` kept as it is: its ranges are read when the run keys are built)
            self._ids = hash_ids if type(hash_ids) is tuple or type(hash_ids) is IdRanges else tuple(hash_ids)
            r = H // block_size
            self.starts: Sequence[int] = range(0, n, r)
            self.ends: Sequence[int] = range(r, n + 1, r)
        else:
            ids, starts = [], []
            a = 0
            for m, h in enumerate(hash_ids):
                b = (m + 1) * H // block_size
                if b > a:
                    ids.append(h)
                    starts.append(a)
                    a = b
            self._ids, self.starts = tuple(ids), starts
            self.ends = starts[1:] + [n] if n else []
        self.run_keys = RunKeys(self._ids, self.starts)
        self._block_size = block_size
        self._tuple: tuple | None = None
        self._idents: list | None = None  # `block_idents`, kept until `release`

    def __len__(self) -> int:
        return self.num_blocks

    def release(self) -> None:
        """Drop what was built for lookups (the request's blocks are gone)."""
        self.run_keys.release()
        self._tuple = None
        self._idents = None

    def built_run_keys(self) -> tuple[tuple, int, list] | None:
        """(ids, run length, run keys) if the run keys are built, packed ints, over runs of
        one length: what `reuse` takes. The list is still these keys' (`take_run_keys`)."""
        lst = self.run_keys._list
        if lst is None or type(self.starts) is not range or not lst or type(lst[0]) is not int:
            return None
        return self._ids, self.starts.step, lst

    def take_run_keys(self) -> tuple[tuple, int, list] | None:
        """`built_run_keys`, the list given to the caller: these keys forget it (and build it again if read)."""
        if (built := self.built_run_keys()) is not None:
            self.run_keys._list = None
        return built

    def reuse(self, built: tuple[tuple, int, list]) -> bool:
        """Build the run keys from another request's (`take_run_keys`) when its ids start
        these (a conversation's next turn extends the previous turn's context): its keys for
        the common ids, packed ones for the rest. False (nothing done) if they do not. The
        list in `built` becomes these keys' own (`take_run_keys` gave it away)."""
        ids, r, lst = built
        rk = self.run_keys
        mine = self._ids
        # (the lengths read once, an `IdRanges`' from its bounds: its `__len__` is a Python call)
        num_ids = ids.bounds[-1] if type(ids) is IdRanges else len(ids)
        num_mine = mine.bounds[-1] if type(mine) is IdRanges else len(mine)
        n = min(num_ids, num_mine)
        if rk._list is not None or type(self.starts) is not range or self.starts.step != r or n < 2:
            return False
        # Packed as `RunKeys` would (all ids ints): the common ids equal the other's, which
        # are ints as its keys are packed, so only the new ones are checked (choice: an id of
        # another type equal to an int, 5.0 for 5, counts as that int here).
        if type(mine) is IdRanges and type(ids) is IdRanges and n == num_ids and mine.extends(ids):
            # (ids from `HashIds`, ints: these start with all the other's, seen from their ranges'
            # starts; the new ids are one fresh range when the last range starts at n)
            del lst[n:]  # (its keys past its ids, if any: see below)
            if mine.bounds[-2] == n:  # (so its last range's first id is mine[n])
                lst += id_keys(mine.firsts[-1], num_mine - n, n * r, r)
            elif num_mine > n:
                rest = mine[n:]  # (an `IdRanges`: packed range by range)
                lst += pack_ranges(rest.bounds, rest.firsts, self.starts[n:])
            rk._list = lst
            return True
        if type(mine) is tuple and type(ids) is tuple and mine[n - 1] != ids[n - 1]:
            return False  # (the last common id differs, the usual miss of a trace's requests sharing their first ids)
        new = mine[n:]  # (sliced once: the type check and the packing read it)
        if (mine[:n] != ids if n == num_ids else mine[:n] != ids[:n]) or not set(map(type, new)) <= {int}:
            return False
        if n < len(lst):
            del lst[n:]  # (packed in place: see above)
        if len(new) > 8 and new[-1] - new[0] == len(new) - 1 and new == tuple(range(new[0], new[-1] + 1)):
            # the usual case: the turn's new ids are one fresh range (`HashIds.fresh`)
            lst += id_keys(new[0], len(new), n * r, r)
        else:
            lst += pack_ints(new, self.starts[n:])
        rk._list = lst
        return True

    def first_id(self):
        """The first hash id (None without any)."""
        ids = self._ids
        if type(ids) is IdRanges:  # (its first range's first id: indexing and len() of an
            # `IdRanges` are Python calls, about 1,000 and 300 instructions; read at every free)
            return ids.firsts[0] if ids.firsts else None
        return ids[0] if ids else None

    def __bool__(self) -> bool:
        return self.num_blocks > 0

    def as_tuple(self) -> tuple:
        if self._tuple is None:
            bs = self._block_size
            keys = []
            for h, a, b in zip(self._ids, self.starts, self.ends):
                keys += [(h, e) for e in range((a + 1) * bs, b * bs + 1, bs)]
            self._tuple = tuple(keys)
        return self._tuple

    def __getitem__(self, i):
        return self.as_tuple()[i]

    def __iter__(self):
        return iter(self.as_tuple())

    def __hash__(self) -> int:
        return hash(self.as_tuple())

    def __eq__(self, other) -> bool:
        return self.as_tuple() == _tuple_of(other)

    def __lt__(self, other) -> bool:
        return self.as_tuple() < _tuple_of(other)

    def __le__(self, other) -> bool:
        return self.as_tuple() <= _tuple_of(other)

    def __gt__(self, other) -> bool:
        return self.as_tuple() > _tuple_of(other)

    def __ge__(self, other) -> bool:
        return self.as_tuple() >= _tuple_of(other)


class RunKeys(Sequence):
    """The run keys of a `BlockKeys`: run i's key is (hash id, first position), packed into one
    int when the ids are ints (`RUN_KEY_BASE`, `fold`: ints hash and compare faster). Built on first
    read and kept until `release` (the KV cache releases them when the request's blocks are
    freed): kept for every request of a run, they were most of a multi-turn run's memory (40
    bytes per run per request)."""

    __slots__ = ("_ids", "_starts", "_list")

    def __init__(self, ids: tuple, starts: Sequence[int]) -> None:
        self._ids = ids
        self._starts = starts
        self._list: list | None = None

    def _build(self) -> list:
        ids, starts = self._ids, self._starts
        if type(ids) is IdRanges and type(starts) is range:  # (`HashIds`' ids: a few ranges of ints)
            lst = pack_ranges(ids.bounds, ids.firsts, starts)
        elif type(ids) is IdRanges or set(map(type, ids)) <= {int}:
            lst = pack_long(ids, starts) if len(ids) > 64 and type(starts) is range else None
            if lst is None:
                lst = pack_ints(ids, starts)
        else:
            lst = list(zip(ids, self._starts))
        self._list = lst
        return lst

    def release(self) -> None:
        self._list = None

    def as_list(self) -> list:
        lst = self._list
        return lst if lst is not None else self._build()

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, i):
        lst = self._list
        return (lst if lst is not None else self._build())[i]

    def __iter__(self):
        lst = self._list
        return iter(lst if lst is not None else self._build())


def fold(h: int) -> int:
    """The int a run key packs for id h (`_FOLD`): h - F - 2**28 on [F, F + 2**28), h + F + 2**28
    on [-2**28, 0) (F = `FOLLOW_UP_IDS`), h elsewhere."""
    if _FOLD_LO <= h < _FOLD_HI:
        return h - _FOLD_BY
    return h + _FOLD_BY if -_FOLD <= h < 0 else h


def id_keys(h: int, n: int, p: int, step: int):
    """The run keys of the ids h, h + 1, ..., h + n - 1 (n >= 1) at positions p, p + step, ...:
    one `key_steps` where `fold` is a shift over them, cut where they cross one of its spans'
    ends."""
    e = h + n
    if 0 <= h and e <= _FOLD_LO:  # (ids that are their own: a first turn's, a trace's)
        return key_steps(h * RUN_KEY_BASE + p, n, RUN_KEY_BASE + step)
    if _FOLD_LO <= h and e <= _FOLD_HI:  # (a follow-up's)
        return key_steps((h - _FOLD_BY) * RUN_KEY_BASE + p, n, RUN_KEY_BASE + step)
    cuts = [h, *(c for c in (-_FOLD, 0, _FOLD_LO, _FOLD_HI) if h < c < e), e]
    out: list = []
    for a, b in zip(cuts, cuts[1:]):
        out += key_steps(fold(a) * RUN_KEY_BASE + p + (a - h) * step, b - a, RUN_KEY_BASE + step)
    return out


def pack_ranges(bounds: Sequence[int], firsts: Sequence[int], starts: range) -> list:
    """The run keys of the ids of an `IdRanges`' `bounds` and `firsts` at positions `starts`."""
    start, step = starts.start, starts.step
    lst: list = []
    for i, j, h in zip(bounds, bounds[1:], firsts):
        if j > i:
            lst += id_keys(h, j - i, start + i * step, step)
    return lst


def pack_ints(ids: Sequence[int], starts: Sequence[int]) -> list:
    """The run keys of `ids` (ints) at positions `starts`, id by id."""
    if ids and (min(ids) < 0 or max(ids) >= _FOLD_LO):  # (some id may fold: a follow-up's
        # read back from a trace, a negative one)
        return [fold(h) * RUN_KEY_BASE + p for h, p in zip(ids, starts)]
    base = RUN_KEY_BASE  # (a comprehension: about 15 % faster than `map(add, map(mul, ...))` here)
    return [h * base + p for h, p in zip(ids, starts)]


def pack_long(ids: tuple, starts: range) -> list | None:
    """The packed run keys `fold(ids[i]) * RUN_KEY_BASE + starts[i]` of a long context (ints) with
    numpy's help, else None (then packed id by id). A generated context is a few ranges of
    consecutive ids (`HashIds` gives each turn fresh consecutive ids; a next turn's extend its
    previous turn's): over such a range the keys step by RUN_KEY_BASE + starts.step, so each
    range is one or two C-level `range`s (`id_keys`), the same ints as packing id by id (a
    follow-up's ids are >= 2**48, too large for packing in int64, and a Python multiply-add per id was most of
    building a multi-turn context's keys). The ranges are found by bisection (`range_bounds`),
    else with numpy; other ids that fit pack in int64. (Ids that carry their ranges, `IdRanges`,
    are packed by them in `RunKeys._build`, not here.)"""
    bounds = range_bounds(ids, (len(ids) >> 4) + 1)
    if bounds is None:
        try:
            a = np.array(ids, dtype=np.int64)
        except OverflowError:  # (an id outside int64)
            return None
        lo, hi = a.min(), a.max()
        if -_RANGE_LIMIT <= lo and hi < _RANGE_LIMIT:  # (so that np.diff cannot wrap around)
            cuts = np.flatnonzero(np.diff(a) != 1)
            if len(cuts) <= len(ids) >> 4:  # a few ranges
                bounds = [0, *(cuts + 1).tolist(), len(ids)]
        if bounds is None:
            if 0 <= lo and hi < _ID_LIMIT:  # ids their own (`fold`); id * RUN_KEY_BASE + start fits an int64
                return (a * RUN_KEY_BASE + np.arange(starts.start, starts.stop, starts.step, dtype=np.int64)).tolist()
            return None
    return pack_ranges(bounds, list(map(ids.__getitem__, bounds[:-1])), starts)


def key_steps(k: int, n: int, step: int):
    """The ints k, k + step, ... (n of them, n >= 1) of `range(k, k + n * step, step)`. Past a
    C long (ids past `fold`'s spans) `range`'s iterator
    multiplies and adds Python ints per item, about three times as long as one addition each
    (`accumulate`); within a C long (every key of a generated run) `range` is the faster one."""
    stop = k + n * step
    if stop < _C_LONG and k >= -_C_LONG:
        return range(k, stop, step)
    return accumulate(repeat(step, n - 1), initial=k)


def range_bounds(ids: tuple, limit: int) -> list[int] | None:
    """[0, b1, ..., len(ids)]: `ids` (ints) split into at most `limit` pieces of consecutive
    ids, or None. Each piece's end is found by bisection, taking ids[m] == ids[i] + (m - i) to
    hold up to the piece's end and not after (a generated context: ascending ranges), and then
    checked against a `range` (C-level), so the answer is exact for any ids; ids that are not
    such ranges give None after at most `limit` bisections. Why not numpy: converting a tuple
    of Python ints to an array costs more than the whole check (a first turn is one range of a
    few hundred ids: the usual case)."""
    n = len(ids)
    bounds = [0]
    i = 0
    while i < n:
        if len(bounds) > limit:
            return None
        a = ids[i]
        lo, hi = i + 1, n  # ids[lo - 1] == a + (lo - 1 - i) holds
        while lo < hi:
            mid = (lo + hi + 1) >> 1
            if ids[mid - 1] - a == mid - 1 - i:
                lo = mid
            else:
                hi = mid - 1
        if ids[i:lo] != tuple(range(a, a + lo - i)):
            return None
        bounds.append(lo)
        i = lo
    return bounds


def _tuple_of(keys) -> tuple:
    return keys.as_tuple() if type(keys) is BlockKeys else tuple(keys)


def block_keys(req: Any, block_size: int, shared_only: bool = False) -> BlockKeys:
    """The request's prefix keys at `block_size` (from its chained hash ids); `shared_only`:
    of its leading ids that another request may share only (`Request.num_shared_hash_ids`,
    when known: the blocks of the rest would be registered, evicted and dropped again without
    ever being hit; `Engine.shared_keys_only` says when that is exact)."""
    ids = req.hash_ids
    if shared_only and (n := req.num_shared_hash_ids) is not None and n < len(ids):
        ids = ids[:n]
    return BlockKeys(ids, req.hash_block_tokens, block_size)


def keyed_pairs(reqs: Sequence, ctx1: Sequence[int]) -> list[tuple[Any, int]]:
    """(request, ctx1) of those of `reqs` with prefix keys, for a stretch's registrations
    (`bool(keys)` without `BlockKeys.__bool__`'s Python call)."""
    return [(r, c) for r, c in zip(reqs, ctx1)
            if (k := r.kv_block_keys) is not None and (k.num_blocks if type(k) is BlockKeys else k)]


def runs_of(keys: Sequence) -> tuple[Sequence, Sequence[int], Sequence[int]]:
    """(run keys, first positions, end positions) of any key sequence. A plain tuple of keys (as
    tests and policies may set) is one run per key, keyed (None, key); its keys are taken to
    identify their position, as those from `block_keys` do."""
    if type(keys) is BlockKeys:
        return keys.run_keys.as_list(), keys.starts, keys.ends
    return [(None, k) for k in keys], range(len(keys)), range(1, len(keys) + 1)


def block_idents(keys: Sequence) -> list:
    """One hashable per block such that two requests' blocks at the same position are equal
    exactly when their keys are: a `BlockKeys`' run key repeated over its run (a run key and a
    position name one (hash id, end token) key), else the keys themselves (as a list).

    A `BlockKeys`' list is built once and kept until its `release` (read only: callers slice
    it). The radix cache reads it at a request's match, at each prefill chunk's insert and at
    its finish (4.5 times a Mooncake request, ~1,370 blocks each): built every time, that was
    27 % of sglang's mooncake cell."""
    if type(keys) is not BlockKeys:
        return list(keys)
    ids = keys._idents
    if ids is None:
        rks = keys.run_keys[:]
        if len(rks) == len(keys):
            ids = rks
        else:
            ids = list(chain.from_iterable(map(repeat, rks, map(sub, keys.ends, keys.starts))))
        keys._idents = ids
    return ids
