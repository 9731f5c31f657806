"""The prefix index's keys by diagonal: a registration's keys indexed as a few ranges, not one by one.

A run key packs (id, first position) one-to-one (`RUN_KEY_BASE`, `fold`: packed_keys.py), and run i
starts at position i * r (r: a run's length in blocks), so for keys of one run length a key
determines its id h and its run i, and so its *diagonal* h - i. Along a range of consecutive ids
at consecutive runs the diagonal is one number, and a generated request's ids are a few such
ranges (`IdRanges`: a conversation's first turn, then one fresh range per turn, drawn from
counters no other conversation reads), read from the ranges' first ids and bounds: the keys a
registration adds lie on a few diagonals, each over an interval of runs.

So those keys are not put in the index dict one by one (a hash and an insert per key, and a pop per
key when the group is dropped: about a fifth of a sessions request at 8 replicas, where a turn routed
away from its context registers hundreds of keys again). `DiagonalRecord` keeps, per diagonal, the
*pieces* indexed on it: [first run, end run, group], disjoint (a key is indexed only when absent), a
decode's blocks continuing a piece extending it in place. A group lists its pieces in the order of
its runs (`Group.diags`), so its drop, or a dead group cut at its end, takes them back; their keys
are not listed one by one anywhere (a piece gives them back: `group_runs`). The dict `_index` keeps
only the keys whose diagonal is not read from ranges (ids that are not an `IdRanges`: a trace's,
Mooncake's; another run length): *untracked*, listed by a group as [None, count] and in `Group.runs`.

Every read of the index goes through this record and the dict both (a key is in one of them at
most): `_group_at` (which group a run maps to), `_groups` (a stretch of runs, `extents`), `_absent`
(none of a stretch of runs is indexed: the checks before a registration), `_group_of_key` (a key
alone, unpacked back to its id and run). So the index's answers are the dict's of every key, as
before, and nothing that reads the index iterates it (no order can differ).
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import repeat
from collections import deque
from typing import TYPE_CHECKING, Hashable, Sequence

from servesim.replica.block_keys import BlockKeys, run_values, runs_of
from servesim.replica.packed_keys import RUN_KEY_BASE, fold, id_keys
from servesim.workload.prefix import IdRanges

if TYPE_CHECKING:
    from servesim.replica.prefix_groups import Group


def diagonal_pieces(ids: IdRanges, i0: int, i1: int) -> list[tuple[int, int, int]]:
    """(diagonal, first run, end run) of runs [i0, i1) of `ids` (i1 at most their number), a
    piece per range they cross, in order."""
    b, f = ids.bounds, ids.firsts
    if i0 >= b[-2]:  # (all in the last range: a turn's fresh ids, where its decodes' blocks go)
        return [(f[-1] - b[-2], i0, i1)] if i1 > i0 else []
    k = bisect_right(b, i0) - 1  # (the range holding run i0)
    out = []
    a = i0
    while a < i1:
        e = b[k + 1]
        if e > i1:
            e = i1
        if e > a:
            out.append((f[k] - b[k], a, e))  # (the range's diagonal: its first id less its first run)
            a = e
        k += 1
    return out


def diagonal_at(ids: IdRanges, i: int) -> int:
    """The diagonal of run i of `ids` (`diagonal_pieces(ids, i, i + 1)[0][0]`, without its list:
    a lookup of one run, the first of every prefix-cache probe)."""
    b = ids.bounds
    k = bisect_right(b, i) - 1  # (the range holding run i)
    return ids.firsts[k] - b[k]


class DiagonalRecord:
    """The index's keys by diagonal and piece, and the dict of the others (see the module docstring)."""

    _index: dict[Hashable, Group]  # the untracked keys (owned by `PrefixIndex.__init__`, as the record below)
    _diags: dict[int, list]  # diagonal -> its pieces [first run, end run, group]
    _run_len: int  # r of the keys recorded (0: none yet)
    num_absent: int  # checks answered with no probe of the dict (the tests assert the path ran)

    def _tracked(self, keys: Sequence) -> IdRanges | None:
        """The ids of `keys` if its runs are recorded by diagonal (an `IdRanges`, the record's run
        length or none yet), else None."""
        if type(keys) is not BlockKeys:
            return None
        ids = keys._ids
        if type(ids) is not IdRanges or keys.starts.step != self._run_len and self._run_len:
            return None
        return ids

    def _absent(self, keys: Sequence, runs: Sequence, i0: int, i1: int) -> bool:
        """Is none of runs [i0, i1) of `keys` (their run keys, or their range: `runs`, as
        `_runs_from` gives them) indexed? Range by range on the record for tracked keys (the
        dict probed only while it holds any); key by key otherwise."""
        if not self._diags:  # (nothing recorded: the dict alone, as for a trace's keys, Mooncake's)
            return not self._index or self._index.keys().isdisjoint(run_values(keys, runs))
        ids = self._tracked(keys)
        if ids is None:
            runs = run_values(keys, runs)
            if self._index and not self._index.keys().isdisjoint(runs):
                return False
            return not self._diags or all(self._decoded(k) is None for k in runs)
        return self._absent_on(diagonal_pieces(ids, i0, i1), runs, keys)

    def _absent_on(self, pieces: list[tuple[int, int, int]], runs: Sequence, keys: Sequence) -> bool:
        """`_absent` of tracked keys' runs by their pieces (`diagonal_pieces`) and `runs`."""
        rec = self._diags
        for d, a, e in pieces:
            on = rec.get(d)
            if on is not None:
                for x in on:
                    if x[0] < e and a < x[1]:
                        return False
        if self._index:
            return self._index.keys().isdisjoint(run_values(keys, runs))
        self.num_absent += 1
        return True

    def _group_at(self, keys: Sequence, i: int) -> Group | None:
        """The group run i of `keys` maps to, or None (not indexed)."""
        if not self._diags:  # (nothing recorded: the dict alone)
            return self._index.get(runs_of(keys)[0][i]) if self._index else None
        ids = self._tracked(keys)
        if ids is None:
            return self._group_of_key(runs_of(keys)[0][i])
        pieces = self._diags.get(diagonal_at(ids, i))
        if pieces is not None:
            for x in pieces:
                if x[0] <= i < x[1]:
                    return x[2]
        return self._index.get(keys.run_keys.as_list()[i]) if self._index else None

    def _groups(self, keys: Sequence, i0: int, i1: int) -> list:
        """The group (or None) of each of runs [i0, i1) of `keys`."""
        if not self._diags:  # (nothing recorded: the dict alone)
            return list(map(self._index.get, runs_of(keys)[0][i0:i1]))
        ids = self._tracked(keys)
        if ids is None:
            out = list(map(self._index.get, runs_of(keys)[0][i0:i1]))
            if self._diags:
                run_keys = runs_of(keys)[0]
                out = [g if g is not None else self._decoded(run_keys[i0 + t]) for t, g in enumerate(out)]
            return out
        out = [None] * (i1 - i0)
        rec = self._diags
        if rec:
            for d, a, e in diagonal_pieces(ids, i0, i1):
                pieces = rec.get(d)
                if pieces is not None:
                    for x in pieces:
                        lo, hi = max(x[0], a), min(x[1], e)
                        if lo < hi:
                            out[lo - i0:hi - i0] = [x[2]] * (hi - lo)
        if self._index:
            get = self._index.get
            run_keys = keys.run_keys.as_list()
            out = [g if g is not None else get(run_keys[i0 + t]) for t, g in enumerate(out)]
        return out

    def _group_of_key(self, key: Hashable) -> Group | None:
        """The group a run key maps to, or None."""
        g = self._index.get(key) if self._index else None
        return g if g is not None or not self._diags else self._decoded(key)

    def _decoded(self, key: Hashable) -> Group | None:
        """The group of a key recorded by diagonal (its id and run unpacked from the key), or None."""
        if type(key) is not int:
            return None
        q, p = divmod(key, RUN_KEY_BASE)
        r = self._run_len
        if p % r:
            return None
        i = p // r
        pieces = self._diags.get(fold(q) - i)
        if pieces is not None:
            for x in pieces:
                if x[0] <= i < x[1]:
                    return x[2]
        return None

    def _insert(self, keys: Sequence, runs: Sequence, i0: int, i1: int, g: Group,
                pieces: list[tuple[int, int, int]] | None = None) -> None:
        """Runs [i0, i1) of `keys` (their run keys or their range: `runs`, none indexed) now map to `g`, which
        counts them after its runs (and lists them if they go to the dict). `pieces`: their
        `diagonal_pieces` if found already (tracked keys)."""
        if i1 <= i0:
            return
        g.num_runs += i1 - i0
        diags = g.diags
        if pieces is None:
            ids = self._tracked(keys)
            if ids is None:
                runs = run_values(keys, runs)
                g.runs += runs
                self._index.update(zip(runs, repeat(g)))
                if diags and diags[-1][0] is None:
                    diags[-1][1] += i1 - i0
                else:
                    diags.append([None, i1 - i0])
                return
            pieces = diagonal_pieces(ids, i0, i1)
        self._run_len = keys.starts.step
        rec = self._diags
        for d, a, e in pieces:
            last = diags[-1] if diags else None
            if last is not None and last[0] == d and last[1][1] == a:  # (a decode's blocks continuing the piece)
                last[1][1] = e
            else:
                x = [a, e, g]
                pieces = rec.get(d)
                if pieces is None:
                    rec[d] = [x]
                else:
                    pieces.append(x)
                diags.append([d, x])

    def _forget(self, g: Group, n: int) -> None:
        """The last `n` runs mapped to `g` leave the index and `g` (all of them: its drop)."""
        diags, rec, runs = g.diags, self._diags, g.runs
        g.num_runs -= n
        while n:
            last = diags[-1]
            d, x = last
            if d is None:  # (untracked keys: popped from the dict)
                c = x
                if c > n:
                    last[1] = c - n
                    c = n
                else:
                    diags.pop()
                end = len(runs) - c
                deque(map(self._index.pop, runs[end:], repeat(None)), maxlen=0)  # (None: a run listed twice)
                del runs[end:]
            else:
                c = x[1] - x[0]
                if c > n:  # (a dead group cut inside one piece: `_register_new`)
                    x[1] -= n
                    c = n
                else:
                    diags.pop()
                    pieces = rec[d]
                    if len(pieces) == 1:
                        del rec[d]
                    else:
                        del pieces[next(t for t, y in enumerate(pieces) if y is x)]
            n -= c

    def indexed(self) -> dict:
        """Every indexed run key -> its group (the dict's and the record's: for tests)."""
        out = dict(self._index)
        for g in {x[2] for pieces in self._diags.values() for x in pieces}:
            out.update(zip(self.group_runs(g), repeat(g)))
        return out

    def group_runs(self, g: Group) -> list:
        """The run keys the index maps to `g`, in order: those recorded by diagonal packed back
        from their pieces (id = diagonal + run, at position run * r), the others as listed (for tests)."""
        out, off, r = [], 0, self._run_len
        for d, x in g.diags:
            if d is None:
                out += g.runs[off:off + x]
                off += x
            else:  # (runs a..e-1 hold the ids d + a, d + a + 1, ... at positions a * r, (a + 1) * r, ...)
                out += id_keys(d + x[0], x[1] - x[0], x[0] * r, r)
        return out
