"""The prefix index's record of its keys by diagonal: keys known absent without a probe each.

A run key packs (id, first position) one-to-one (`RUN_KEY_BASE`, `fold`: block_keys.py), and run i
starts at position i * r (r: a run's length in blocks), so for keys of one run length a key
determines its id h and its run i, and so its *diagonal* h - i. Along a range of consecutive ids
at consecutive runs the diagonal is one number, and a generated request's ids are a few such
ranges (`IdRanges`: a conversation's first turn, then one fresh range per turn, drawn from
counters no other conversation reads), read from the ranges' first ids and bounds: the keys a
registration inserts lie on a few diagonals, each over an interval of runs.

`DiagonalRecord` keeps, per diagonal, how many indexed keys lie on it and the hull of their runs;
a group lists what it added (`Group.diags`), so its drop takes it back. A check that keys are not
indexed (`unindexed`, `_register_new`, `plan_appends`, `_dead_lead`: before a registration) is
answered range by range when none of their diagonals is recorded over their runs: a turn's new
message, a decode's next blocks, a context at a replica that never keyed it or dropped it.
Otherwise (a diagonal recorded there: a context evicted whole but kept indexed, `retire`; a
context computed again, sarathi's; two conversations' ranges on one diagonal by chance) the probe
per key runs as before.

Exact: every indexed key is listed by the group it maps to (`g.runs`), and every listing added
its count to its diagonal and its run to the hull, taken back only when the listing leaves
(`drop`, or a dead group cut, `_register_new`); so an indexed key's diagonal is recorded with a
hull covering its run, and a key whose diagonal is not recorded there is not indexed. Keys whose
diagonal is not read from ranges (ids that are not an `IdRanges`: a trace's, Mooncake's; another
run length) are counted as untracked, and while any is indexed nothing is answered here.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import TYPE_CHECKING, Hashable, Sequence

from servesim.replica.block_keys import BlockKeys
from servesim.workload.prefix import IdRanges

if TYPE_CHECKING:
    from servesim.replica.prefix_groups import Group


class DiagonalRecord:
    """The per-diagonal counts and hulls of an index's keys (see the module docstring)."""

    _index: dict[Hashable, Group]  # owned by `PrefixIndex.__init__`, as the record below
    _diags: dict[int, list]  # diagonal -> [keys indexed on it, first run, end run] (the hull)
    _untracked: int  # keys indexed whose diagonal is not recorded
    _run_len: int  # r of the keys recorded (0: none yet)
    num_absent: int  # checks answered here

    def _absent(self, keys: Sequence, i0: int, i1: int) -> bool:
        """True if none of runs [i0, i1) of `keys` (a `BlockKeys`) is indexed, known from the
        record; False if not known (then probe)."""
        if self._untracked:
            return False
        rec = self._diags
        if not rec:
            self.num_absent += 1
            return True  # (nothing indexed)
        ids = keys._ids
        if type(ids) is not IdRanges or keys.starts.step != self._run_len:
            return False
        b, f = ids.bounds, ids.firsts
        k = len(b) - 2 if i0 >= b[-2] else bisect_right(b, i0) - 1  # (the range holding run i0)
        a = i0
        while a < i1:
            e = b[k + 1]
            if e > i1:
                e = i1
            if e > a:
                x = rec.get(f[k] - b[k])  # (the range's diagonal: its first id less its first run)
                if x is not None and x[1] < e and a < x[2]:
                    return False  # (keys on it indexed over these runs, maybe these)
                a = e
            k += 1
        self.num_absent += 1
        return True

    def _track(self, keys: Sequence, i0: int, i1: int, g: Group) -> None:
        """Runs [i0, i1) of `keys` were just indexed to `g` (and appended to `g.runs`)."""
        if i1 <= i0:
            return
        diags = g.diags
        ids = keys._ids if type(keys) is BlockKeys else None
        if type(ids) is not IdRanges or (r := keys.starts.step) != self._run_len and self._run_len:
            self._untracked += i1 - i0
            diags.append([None, i1 - i0])
            return
        self._run_len = r
        rec = self._diags
        b, f = ids.bounds, ids.firsts
        k = len(b) - 2 if i0 >= b[-2] else bisect_right(b, i0) - 1
        a = i0
        while a < i1:
            e = b[k + 1]
            if e > i1:
                e = i1
            if e > a:
                n = e - a
                d = f[k] - b[k]
                if (x := rec.get(d)) is None:
                    rec[d] = [n, a, e]
                else:
                    x[0] += n
                    if a < x[1]:
                        x[1] = a
                    if e > x[2]:
                        x[2] = e
                if diags and diags[-1][0] == d:  # (a decode's blocks continuing the range)
                    diags[-1][1] += n
                else:
                    diags.append([d, n])
                a = e
            k += 1

    def _untrack(self, g: Group, n: int) -> None:
        """The last `n` runs `g` lists leave the index (all of them: its drop)."""
        diags, rec = g.diags, self._diags
        while n:
            last = diags[-1]
            d, c = last
            if c > n:  # (a dead group cut inside one range: `_register_new`)
                last[1] = c - n
                c = n
            else:
                diags.pop()
            n -= c
            if d is None:
                self._untracked -= c
            else:
                x = rec[d]
                x[0] -= c
                if not x[0]:
                    del rec[d]
