"""Run keys packed into ints: a prefix-cache run (hash id, first position) as one int, and the
ids of a context packed into such ints in bulk (by ranges of consecutive ids where it has them).
`BlockKeys`' run keys (`replica/block_keys.py`) are built with these; the prefix index's
diagonals (`replica/prefix_diagonals.py`) read the packing back."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate, repeat

import numpy as np

from servesim.workload.prefix import FOLLOW_UP_IDS

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
