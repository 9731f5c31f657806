"""The prefix cache's index: key runs -> groups, and the per-request segments over them.

`KVCacheManager` (kv_cache.py) owns the free queue and the counts; this module answers which
of a request's keys are cached and updates the groups (`prefix_groups.py`) a request hits or
registers. Work is per extent (a stretch of positions whose key runs map to one group) plus
C-level list operations per run, never Python work per block; keys whose ids are ranges are
indexed as pieces per diagonal, a few per registration, the others in a dict
(prefix_diagonals.py). The index's writes (registration, dropping a group, bulk conflict
checks) are `PrefixRegistration` (prefix_registration.py); this module keeps the records and
the lookups.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from itertools import compress, count
from operator import ne
from typing import Any, Hashable, Sequence

from servesim.replica.block_keys import BlockKeys, runs_of
from servesim.replica.prefix_groups import Group
from servesim.replica.prefix_registration import PrefixRegistration
from servesim.workload.prefix import IdRanges


@dataclass(slots=True)
class Hits:
    """A prefix-cache hit (`get_computed_blocks`): the request's first `num_keyed` keyed
    blocks, then `num_own` blocks of its own surviving unique run. Valid until the next
    allocation (which may evict)."""

    num_keyed: int = 0
    num_own: int = 0
    extents: list | None = None  # (group, first, end) covering the keyed blocks, found by the lookup

    def __len__(self) -> int:
        return self.num_keyed + self.num_own


@dataclass(slots=True)
class Held:
    """Blocks held by one request: keyed blocks for positions [0, num_keyed), then plain ones.
    `segs` lists the keyed positions as [group, first, end] in order; a position refers to the
    group's block at that slot, except the positions in `dups`' ranges, which hold an unregistered
    copy (`copies.py`)."""

    num_keyed: int = 0
    num_plain: int = 0
    segs: list[list] = field(default_factory=list)
    dups: list[tuple[int, int]] | None = None  # (first, end) ranges of copies, ascending
    keys: Any = None  # the request's prefix keys, released with its blocks

    def add(self, group: Group, p0: int, p1: int) -> None:
        segs = self.segs
        if segs and segs[-1][0] is group and segs[-1][2] == p0:
            segs[-1][2] = p1
        else:
            segs.append([group, p0, p1])


class PrefixIndex(PrefixRegistration):
    """Which group holds each key run's blocks (see the module docstring)."""

    def __init__(self) -> None:
        self._index: dict[Hashable, Group] = {}  # keys not recorded by diagonal (prefix_diagonals.py)
        self.num_inserts = 0
        self._unindexed: tuple | None = None  # (`unindexed`'s last True answer)
        self._dead: dict[Group, int] = {}  # groups evicted whole whose keys stay indexed, oldest first: keys counted
        self._num_dead = 0  # keys of `_dead`
        self.dead_capacity = 0  # keys the dead groups may keep indexed (`retire`); 0: dropped when evicted
        self.num_taken_back = 0  # registrations that filled a dead group's slots again (the tests assert the path ran)
        self._diags: dict[int, list] = {}  # the keys' pieces by diagonal (prefix_diagonals.py)
        self._run_len = 0
        self.num_absent = 0  # checks answered by the diagonals (the tests assert the path ran)
        self.queued: dict[int, list] | None = None  # the free queue's group entries by stamp (`FreeQueue.entries`)

    def extents(self, keys: Sequence, p0: int, p1: int) -> list[tuple]:
        """Split positions [p0, p1) where the group their key runs map to changes: (group or
        None, first, end, first run, end run)."""
        run_keys, starts, ends = runs_of(keys)
        if type(starts) is range:  # runs of one length: no search
            r = starts.step
            i0, i1 = p0 // r, -(-p1 // r)
        else:
            i0 = bisect_right(starts, p0) - 1  # the run holding p0; the last run listed holds p1 - 1
            i1 = bisect_left(starts, p1, i0)
        g = self._group_at(keys, i0)
        if i1 - i0 == 1:
            return [(g, p0, p1, i0, i1)]
        # The runs that continue g's own, in order, map to g without a lookup each (as in
        # `_leading_runs_of`): a policy computing a cached context again (`sarathi`, `vtc`,
        # `orca`) registers a next turn's prompt over its previous turn's group, hundreds of runs.
        m = self._runs_in(g, keys, i0, i1) if g is not None and type(starts) is range else 0
        gs = [g] * m + self._groups(keys, i0 + m, i1) if m else self._groups(keys, i0, i1)
        out = []
        k, n = 0, len(gs)
        while k < n:
            g = gs[k]
            m = k + gs.count(g)  # the usual case: all of g's runs are together
            if m > n or gs[k:m].count(g) != m - k:
                m = k + 1
                while m < n and gs[m] is g:
                    m += 1
            out.append((g, starts[i0 + k] if k else p0, ends[i0 + m - 1] if m < n else p1, i0 + k, i0 + m))
            k = m
        return out

    def leading_cached(self, keys: Sequence, num_keys: int) -> list[tuple]:
        """The leading cached part of the first `num_keys` keys, as (group, first, end)."""
        if not num_keys:
            return []
        g = self._group_at(keys, 0)
        if g is None:
            return []  # the usual miss: not even the first run (no lookup of the others)
        out: list[tuple] = []
        p0 = self._leading_runs_of(keys, g, num_keys)
        if p0:  # positions [0, p0) map to g: no lookup of their runs
            k = g.num_leading_cached(0, p0)
            if k:
                out.append((g, 0, k))
            if k < p0 or p0 == num_keys or self._group_at(keys, p0 // keys.starts.step) is None:
                return out  # (the last: a next turn's new message, whose runs need no lookup)
        for g, p0, p1, _, _ in self.extents(keys, p0, num_keys):
            k = g.num_leading_cached(p0, p1) if g is not None else 0
            if k and out and out[-1][0] is g:  # g's runs past those in common: one extent, as a lookup of all gives
                out[-1] = (g, out[-1][1], p0 + k)
            elif k:
                out.append((g, p0, p0 + k))
            if k < p1 - p0:
                break
        return out

    def _dead_lead(self, keys: Sequence, runs: Sequence, k0: int, k1: int) -> tuple | None:
        """(group, e, m) when the first m of `runs` (the run keys of positions [k0, k1) of
        `keys`, k0 at a run's start) are, in order, the runs `group` lists from k0's on, so map
        to it (`_leading_runs_of`), none of its slots in [k0, e) is cached (e: where those runs
        end, or k1), and, if e < k1, the group ends at e and the runs past them are not indexed:
        then registering [k0, k1) fills the group's slots [k0, e) again and appends the rest to
        it, as `register`'s search by position would. The usual case is a dead group
        (`retire`): a conversation's context evicted whole during its think time, taken by its
        next turn. None otherwise."""
        if type(keys) is not BlockKeys:
            return None
        starts = keys.starts
        r = starts.step
        i0 = k0 // r
        g = self._group_at(keys, i0)
        if g is None:
            return None
        m = self._runs_in(g, keys, i0, i0 + len(runs))
        if not m:
            return None
        e = (i0 + m) * r
        hi = g.lo + len(g.ref)
        if e >= k1:
            e = k1
            if e > hi:  # (the group's last run only partly registered)
                return None
        elif hi != e or not self._absent(keys, runs[m:], i0 + m, i0 + len(runs)):
            return None
        if g.num_cached and g.any_cached(k0, e):
            return None
        return g, e, m

    def _leading_runs_of(self, keys: Sequence, g: Group, num_keys: int) -> int:
        """How many leading positions (of the first `num_keys`) map to `g`, known without a
        lookup per run: as many runs as keys' first runs and g's first runs have in common (all
        of g's: a conversation's next turn, whose context registered into one group; one or a
        few: a Mooncake prompt sharing its first hash blocks with another's group), or 0 (not
        known).

        Exact because a run key of g's (listed in `g.runs` or on one of its pieces) maps to g
        as long as g is indexed (a key is indexed only when absent, and leaves only when its
        group is dropped, which empties both), so each of keys' runs equal to one of g's maps to g."""
        if type(keys) is not BlockKeys or type(keys.starts) is not range:
            return 0
        return min(self._runs_in(g, keys, 0, -(-num_keys // keys.starts.step)) * keys.starts.step, num_keys)

    def _runs_in(self, g: Group, keys: Sequence, i0: int, i1: int) -> int:
        """How many of runs i0, i0 + 1, ... (below i1) of `keys` map to `g`, in order, known
        without a lookup per run: read from g's listed keys or its pieces by diagonal, whichever
        it has; 0 if not known (runs of several lengths, a group with both, or keys not recorded
        by diagonal beside pieces)."""
        if g.runs:
            if len(g.runs) != g.num_runs:
                return 0
            run_keys, starts, _ = runs_of(keys)
            return _listed_runs_in(g, run_keys, i0, i1, starts) if type(starts) is range else 0
        ids = self._tracked(keys) if g.num_runs else None
        return _common_runs(g.diags, ids, i0, i1) if ids is not None else 0

    def num_free(self, hits: Hits) -> int:
        """Blocks of the hit's keyed part that sit in the free queue."""
        return sum(g.num_free(p0, p1) for g, p0, p1 in hits.extents)

    def hit(self, hits: Hits, held: Held) -> int:
        """`held` takes a reference on the hit's keyed blocks; returns how many left the free
        queue (their count was 0)."""
        n = 0
        queued = self.queued
        for g, p0, p1 in hits.extents:
            n += g.hit(p0, p1, queued)
            held.add(g, p0, p1)
        return n


def _listed_runs_in(g: Group, run_keys: list, i0: int, i1: int, starts: range) -> int:
    """`_runs_in` of a group whose keys are all listed: how many of runs i0, i0 + 1, ... (below
    i1) are, in order, the runs `g.runs` lists from the one holding g's first slot on (a group's
    runs are listed in the order of its slots when runs have one length), so map to g: 0 if not
    known. Exact whatever the guess, as `_leading_runs_of` says: a run key listed in `g.runs`
    maps to g while g is indexed."""
    runs = g.runs
    off = i0 - g.lo // starts.step
    n, m = len(runs) - off, i1 - i0
    if m < n:
        n = m
    if off < 0 or n < 2:
        return 0
    # (compared without a copy of a list that is exactly n long: a next turn's context group
    # usually is, and is hundreds of runs; the same int objects, compared by identity)
    mine = run_keys if i0 == 0 and len(run_keys) == n else run_keys[i0:i0 + n]
    if (runs if off == 0 and len(runs) == n else runs[off:off + n]) == mine:
        return n
    # else the first run that differs, found in C, stopping there (a Mooncake prompt's group
    # is another prompt's: usually they share only the first hash block or two)
    return next(compress(count(), map(ne, runs if off == 0 else runs[off:off + n], mine)))


def _common_runs(diags: list, ids: IdRanges, i0: int, i1: int) -> int:
    """`_runs_in` of a group whose keys are all recorded by diagonal: how many of runs i0, i0 +
    1, ... (below i1) of the ids `ids` lie, in order, on the group's pieces `diags` ([diagonal,
    [first run, end run, group]] in the order of its runs), each on a piece of its own diagonal
    (its range's first id less its first run, `diagonal_pieces`), so its key is indexed there.
    (The ranges walked beside the pieces: a next turn's context is its previous turn's group,
    a few pieces.)"""
    b, f = ids.bounds, ids.firsts
    k = bisect_right(b, i0) - 1  # (the range holding run m, below)
    t, n = 0, len(diags)
    while t < n and diags[t][1][1] <= i0:  # (the group's piece holding run i0, if any)
        t += 1
    m = i0
    while t < n and m < i1:
        d, x = diags[t]
        if x[0] > m:
            break
        while b[k + 1] <= m:
            k += 1
        if d != f[k] - b[k]:
            break
        e = b[k + 1]
        if x[1] <= e:
            e = x[1]
            t += 1
        m = e if e < i1 else i1
    return m - i0
