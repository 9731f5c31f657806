"""The runs a registration plan registers (`PrefixRegistration.plan_appends`), by diagonal.

A stretch's plan checks that no run is registered twice (two requests' decodes completing the
same key: stepping would register it for whichever gets there first), and a next turn joining the
stretch (keyed_join.py) checks that none of the runs it registers is one the plan does. As sets of
run keys these were a hash and an insert per key, and a hash and a lookup per key of the joining
turn's (at a replica among many, its whole context: hundreds). Where every item's ids are an
`IdRanges` with runs of one length, the plan keeps instead, per diagonal (prefix_diagonals.py),
the intervals of runs it registers: a run key determines its id and run, so two runs are the same
key exactly when they lie on one diagonal at one run. Plans of other keys (traces, Mooncake) keep
the set.
"""

from __future__ import annotations

from typing import Sequence

from servesim.replica.block_keys import BlockKeys, run_values
from servesim.replica.prefix_diagonals import diagonal_pieces
from servesim.workload.prefix import IdRanges


class PlanRuns:
    """A plan's runs as intervals per diagonal, of keys with runs of `run_len` blocks."""

    __slots__ = ("_by_diag", "run_len")

    def __init__(self, run_len: int) -> None:
        self._by_diag: dict[int, list[int]] = {}  # diagonal -> first, end, first, end, ... of its intervals
        self.run_len = run_len

    def takes(self, keys: Sequence) -> IdRanges | None:
        """The ids of `keys` if its runs can be told here (ranges, this run length), else None."""
        ids = keys._ids if type(keys) is BlockKeys else None
        return ids if type(ids) is IdRanges and keys.starts.step == self.run_len else None

    def add(self, pieces: list[tuple[int, int, int]]) -> bool:
        """Add runs by their pieces ((diagonal, first run, end run): `diagonal_pieces`); False if
        one of them is in already (then the plan is dropped)."""
        by = self._by_diag
        for d, a, e in pieces:
            spans = by.get(d)
            if spans is None:
                by[d] = [a, e]
                continue
            for t in range(0, len(spans), 2):
                if spans[t] < e and a < spans[t + 1]:
                    return False
            spans += (a, e)
        return True

    def meets(self, ids: IdRanges, i0: int, i1: int) -> bool:
        """Is one of runs [i0, i1) in?"""
        by = self._by_diag
        for d, a, e in diagonal_pieces(ids, i0, i1):
            spans = by.get(d)
            if spans is not None:
                for t in range(0, len(spans), 2):
                    if spans[t] < e and a < spans[t + 1]:
                        return True
        return False


def plan_meets(planned: tuple, keys: Sequence, runs: Sequence, i0: int | None) -> bool:
    """Does a plan of `plan_appends` register one of `runs` (`_runs_from`'s), runs i0, i0 + 1,
    ... of `keys` (i0 None: runs of `keys` that are not consecutive)?"""
    plan, seen, _ = planned
    if type(seen) is not PlanRuns:
        return not seen.isdisjoint(run_values(keys, runs))
    ids = seen.takes(keys) if i0 is not None else None
    if ids is not None:
        return seen.meets(ids, i0, i0 + len(runs))
    # (keys whose runs are not told by diagonal: against the plan's run keys themselves)
    return not set().union(*(run_values(item[7], item[5]) for item in plan)).isdisjoint(run_values(keys, runs))
