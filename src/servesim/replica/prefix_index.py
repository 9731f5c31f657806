"""The prefix cache's index: key runs -> groups, and the per-request segments over them.

`KVCacheManager` (kv_cache.py) owns the free queue and the counts; this module answers which
of a request's keys are cached and updates the groups (`prefix_groups.py`) a request hits or
registers. Work is per extent (a stretch of positions whose key runs map to one group) plus
C-level list and dict operations per run, never Python work per block.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, Hashable, Sequence

from servesim.replica.block_keys import BlockKeys, runs_of
from servesim.replica.prefix_groups import Group


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
    group's block at that slot, except the positions in `dups`, which hold an unregistered copy."""

    num_keyed: int = 0
    num_plain: int = 0
    segs: list[list] = field(default_factory=list)
    dups: set[int] | None = None
    keys: Any = None  # the request's prefix keys, released with its blocks

    def add(self, group: Group, p0: int, p1: int) -> None:
        segs = self.segs
        if segs and segs[-1][0] is group and segs[-1][2] == p0:
            segs[-1][2] = p1
        else:
            segs.append([group, p0, p1])


class PrefixIndex:
    """Which group holds each key run's blocks (see the module docstring)."""

    def __init__(self) -> None:
        self._index: dict[Hashable, Group] = {}

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
        if i1 - i0 == 1:
            return [(self._index.get(run_keys[i0]), p0, p1, i0, i1)]
        gs = list(map(self._index.get, run_keys[i0:i1]))
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
        g = self._index.get(runs_of(keys)[0][0])
        if g is None:
            return []  # the usual miss: not even the first run (no lookup of the others)
        out: list[tuple] = []
        p0 = self._leading_runs_of(keys, g, num_keys)
        if p0:  # positions [0, p0) map to g: no lookup of their runs
            k = g.num_leading_cached(0, p0)
            if k:
                out.append((g, 0, k))
            if k < p0 or p0 == num_keys or self._index.get(keys.run_keys[p0 // keys.starts.step]) is None:
                return out  # (the last: a next turn's new message, whose runs need no lookup)
        for g, p0, p1, _, _ in self.extents(keys, p0, num_keys):
            k = g.num_leading_cached(p0, p1) if g is not None else 0
            if k:
                out.append((g, p0, p0 + k))
            if k < p1 - p0:
                break
        return out

    @staticmethod
    def _leading_runs_of(keys: Sequence, g: Group, num_keys: int) -> int:
        """How many leading positions (of the first `num_keys`) map to `g`, known without a
        lookup per run: g's runs are keys' first runs (a conversation's next turn, whose
        context registered into one group), or 0 (not known).

        Exact because a run key in `g.runs` maps to g as long as g is indexed (a key is
        indexed only when absent, and leaves only when its group is dropped, which empties
        `g.runs`), and the runs of `keys` past a common prefix with `g.runs` are not in it
        (a run key names its first position)."""
        if type(keys) is not BlockKeys or type(keys.starts) is not range:
            return 0
        r = keys.starts.step
        n = min(len(g.runs), -(-num_keys // r))
        if n < 2:
            return 0
        return min(n * r, num_keys) if g.runs[:n] == keys.run_keys.as_list()[:n] else 0

    def num_free(self, hits: Hits) -> int:
        """Blocks of the hit's keyed part that sit in the free queue."""
        return sum(g.num_free(p0, p1) for g, p0, p1 in hits.extents)

    def hit(self, hits: Hits, held: Held) -> int:
        """`held` takes a reference on the hit's keyed blocks; returns how many left the free
        queue (their count was 0)."""
        n = 0
        for g, p0, p1 in hits.extents:
            n += g.hit(p0, p1)
            held.add(g, p0, p1)
        return n

    def register(self, keys: Sequence, held: Held, k0: int, k1: int) -> None:
        """`held` computes keys [k0, k1): each key not cached gets a block held once; the
        positions already cached become `held.dups`. New runs go into the group `held` last
        registered into if it ends at their start (a prefix stays one group), else a new one."""
        if self._register_new(keys, held, k0, k1):
            return
        for g, p0, p1, i, j in self.extents(keys, k0, k1):
            if g is None:
                last = held.segs[-1][0] if held.segs else None
                g = last if last is not None and last.hi == p0 else Group(p0)
                new_runs = runs_of(keys)[0][i:j]
                self._index.update(zip(new_runs, repeat(g)))
                g.runs += new_runs
            dups = g.register(p0, p1)
            if dups:
                held.dups = (held.dups or set()).union(dups)
            held.add(g, p0, p1)

    def _register_new(self, keys: Sequence, held: Held, k0: int, k1: int) -> bool:
        """`register` in the usual case (a prefill chunk or a decode completes blocks of the
        request's own), without the search: the runs from k0 on are not indexed, except the
        first when k0 is inside it and `held` registered its first part into its last group,
        which ends at k0. Then no key is cached and every new one goes to that group (or a new
        one if `held`'s last group does not end at k0). False (nothing done) otherwise."""
        runs = _runs_from(keys, k0, k1)
        if runs is None:
            return False
        index, segs = self._index, held.segs
        seg = segs[-1] if segs else None
        g = seg[0] if seg is not None and seg[0].lo + len(seg[0].ref) == k0 else None
        if k0 % keys.starts.step:  # inside a run: held's last group must hold its first part
            if g is None or index.get(runs[0]) is not g:
                return False
            runs = runs[1:]
        if not index.keys().isdisjoint(runs):
            return False
        if g is None:
            g = Group(k0)
            segs.append([g, k0, k1])
        elif seg[2] == k0:
            seg[2] = k1
        else:
            segs.append([g, k0, k1])
        index.update(zip(runs, repeat(g)))
        g.runs += runs
        g.append_held(k1 - k0)
        return True

    def register_appends(self, items: list[tuple[Sequence, Held, int, int]]) -> bool:
        """`register(keys, held, k0, k1)` for each item, in order, when every one is the usual
        case of `_register_new` and none can affect another: none of their new runs is indexed
        or listed twice, no two extend the same group, and none holds an unregistered copy
        (`dups`). Then every group extended holds a block of its request, so no pop of the free
        queue can drop it, and these registrations give the same state before or after pops
        (a stretch's or a step's decodes: one call for all). False, nothing done, otherwise."""
        index = self._index
        pending: list = []
        plan = []
        groups = []
        for keys, held, k0, k1 in items:
            if type(keys) is not BlockKeys or held.dups is not None:
                return False
            starts = keys.starts
            if type(starts) is not range:
                return False
            r = starts.step
            runs = keys.run_keys.as_list()[k0 // r:-(-k1 // r)]
            seg = held.segs[-1] if held.segs else None
            g = seg[0] if seg is not None and seg[0].lo + len(seg[0].ref) == k0 else None
            if k0 % r:  # inside a run: held's last group must hold its first part
                if g is None or index.get(runs[0]) is not g:
                    return False
                runs = runs[1:]
            if g is not None:
                groups.append(g)
            pending += runs
            plan.append((held, g, seg, k0, k1, runs))
        if len(set(pending)) != len(pending) or not index.keys().isdisjoint(pending):
            return False
        if len(groups) > 1 and len(set(map(id, groups))) != len(groups):
            return False
        for held, g, seg, k0, k1, runs in plan:
            if g is None:
                g = Group(k0)
                held.segs.append([g, k0, k1])
            elif seg[2] == k0:
                seg[2] = k1
            else:
                held.segs.append([g, k0, k1])
            index.update(zip(runs, repeat(g)))
            g.runs += runs
            g.append_held(k1 - k0)
        return True

    def drop(self, group: Group) -> None:
        """A group with no cached block leaves the index (it may still be someone's extent)."""
        index, runs = self._index, group.runs
        owners = list(map(index.pop, runs, repeat(None)))  # (one pass: popped, then restored)
        if owners.count(group) != len(runs):  # the usual case: every run mapped here
            for rk, g in zip(runs, owners):
                if g is not group and g is not None:
                    index[rk] = g
        group.runs = []

    def conflicts(self, ranges: list[tuple[Sequence, int, int]]) -> bool:
        """Would registering keys [p0, p1) of each (keys, p0, p1) meet a cached key, or a key
        that an earlier one registers too? (`KVCacheManager.keys_conflict_many`)"""
        pending: list = []
        inside: list = []  # first runs of ranges starting inside a run indexed already
        index = self._index
        for keys, p0, p1 in ranges:
            runs = _runs_from(keys, p0, p1)
            if runs is None:
                return self._conflicts(ranges)
            r = keys.starts.step
            if p0 % r and (g := index.get(runs[0])) is not None:
                # (a decode inside the last run of a Mooncake prompt: the run is indexed to
                # the request's group, whose later slots are not cached, unless someone else's)
                if g.any_cached(p0, min(p1, p0 - p0 % r + r)):
                    return self._conflicts(ranges)
                inside.append(runs[0])
                runs = runs[1:]
            pending += runs
        # The usual case, decided in C: no other run to register is indexed (so none of its
        # blocks is cached) and no run is registered twice. Otherwise the exact search below.
        every = pending + inside if inside else pending
        if len(set(every)) == len(every) and index.keys().isdisjoint(pending):
            return False
        return self._conflicts(ranges)

    def _conflicts(self, ranges: list[tuple[Sequence, int, int]]) -> bool:
        """`conflicts`, position by position where runs are shared."""
        seen: dict[Hashable, Any] = {}  # run key -> positions (a, b) to register, or a list of them
        for keys, p0, p1 in ranges:
            exts = self.extents(keys, p0, p1)
            if any(g is not None and g.any_cached(q0, q1) for g, q0, q1, _, _ in exts):
                return True
            run_keys, starts, ends = runs_of(keys)
            i, j = exts[0][3], exts[-1][4]
            if j - i == 1:
                spans = [(p0, p1)]
            else:
                spans = list(zip(starts[i:j], ends[i:j]))
                spans[0] = (p0, spans[0][1])
                spans[-1] = (spans[-1][0], p1)
            rks = run_keys[i:j]
            if seen.keys().isdisjoint(rks):  # the usual case: no run shared so far
                seen.update(zip(rks, spans))
                continue
            for rk, (a, b) in zip(rks, spans):
                prev = seen.get(rk)
                prev = [] if prev is None else [prev] if type(prev) is tuple else prev
                if any(x < b and a < y for x, y in prev):
                    return True
                seen[rk] = prev + [(a, b)]
        return False


def _runs_from(keys: Sequence, p0: int, p1: int) -> list | None:
    """The run keys of positions [p0, p1), from the run holding p0, if `keys` is a
    `BlockKeys` with runs of equal length, else None."""
    if type(keys) is not BlockKeys:
        return None
    starts = keys.starts
    if type(starts) is not range:
        return None
    r = starts.step
    return keys.run_keys.as_list()[p0 // r:-(-p1 // r)]
