"""What the prefix index's dict costs in one matrix cell, in isolation (issue 15, rangeidx).

    python benchmarks/bench_prefix_dict.py vllm sessions 8 [--requests 4000] [--repeat 3]

Runs the cell once with each replica's index dict (`PrefixIndex._index`) recording the
operations made on it (inserts, probes, single reads, and `drop`'s pops), then replays them on
plain dicts and reports the CPU seconds of the replay: with every operation, without the
probes and reads (only the inserts and pops that keep the dicts' state), and without any (the
replay loop's own cost). That is the per-key dict work an index of id ranges could remove,
measured apart from the simulation's noise. It also counts the keys each kind of operation
touches, and into how many ranges the inserted keys fall (pieces whose consecutive keys step by
`RUN_KEY_BASE + r`, r the run length: the entries an index of id ranges would hold instead), and
with `--ranges r` replays the same operations on a sketch of such an index (`RangeStore`).
"""

from __future__ import annotations

import argparse
import gc
import time
from bisect import bisect_left, bisect_right
from collections import Counter, deque
from itertools import repeat

from bench_matrix import cell_overrides

from servesim import load_scenario, simulate
from servesim.replica import prefix_index, prefix_registration
from servesim.replica.block_keys import RUN_KEY_BASE


class _Probes:
    """`dict.keys()` of a recording dict: its `isdisjoint` is logged."""

    __slots__ = ("d",)

    def __init__(self, d: "_Recording") -> None:
        self.d = d

    def isdisjoint(self, keys) -> bool:
        keys = list(keys)
        self.d.log.append(("probe", self.d.n, keys, 0))
        return dict.keys(self.d).isdisjoint(keys)


class _Recording(dict):
    """A replica's index dict that logs what is done to it (pops are logged by `drop`)."""

    def __init__(self, log: list, n: int) -> None:
        super().__init__()
        self.log, self.n = log, n

    def keys(self):
        return _Probes(self)

    def get(self, key, default=None):
        self.log.append(("read", self.n, [key], 0))
        return dict.get(self, key, default)

    def update(self, items) -> None:
        items = list(items)
        self.log.append(("insert", self.n, [k for k, _ in items], id(items[0][1]) if items else 0))
        dict.update(self, items)


def record(scheduler: str, workload: str, replicas: int, requests: int) -> tuple[list, int]:
    """The cell's dict operations, in order, as (kind, replica's dict, keys); and the dicts' number."""
    log: list = []
    made = [0]
    init, drop = prefix_index.PrefixIndex.__init__, prefix_registration.PrefixRegistration.drop

    def recording_init(self) -> None:
        init(self)
        self._index = _Recording(log, made[0])
        made[0] += 1

    def recording_drop(self, group) -> None:
        log.append(("pop", self._index.n, list(group.runs), id(group)))
        drop(self, group)

    prefix_index.PrefixIndex.__init__ = recording_init
    prefix_registration.PrefixRegistration.drop = recording_drop
    try:
        path, sets = cell_overrides(scheduler, workload, replicas, requests)
        simulate(load_scenario(path, sets)).summary()
    finally:
        prefix_index.PrefixIndex.__init__ = init
        prefix_registration.PrefixRegistration.drop = drop
    return log, made[0]


def replay(log: list, num_dicts: int, kinds: set[str]) -> float:
    """CPU s of the operations of `kinds` on fresh dicts (the others skipped)."""
    dicts = [{} for _ in range(num_dicts)]
    value = object()
    gc.disable()
    t0 = time.process_time()
    for kind, n, keys, _ in log:
        if kind not in kinds:
            continue
        d = dicts[n]
        if kind == "insert":
            d.update(zip(keys, repeat(value)))
        elif kind == "pop":
            deque(map(d.pop, keys, repeat(None)), maxlen=0)
        elif kind == "probe":
            d.keys().isdisjoint(keys)
        else:
            d.get(keys[0])
    t = time.process_time() - t0
    gc.enable()
    return t


def pieces(keys: list, step: int) -> list[tuple[int, int]]:
    """`keys` as pieces (first key, number of keys) of consecutive keys stepping by `step` (a
    range of ids at runs of one length); a key that continues no piece is a piece of one."""
    out: list[list] = []  # [first key, count]
    for k in keys:
        if out and type(k) is int and k - out[-1][0] == out[-1][1] * step:
            out[-1][1] += 1
        else:
            out.append([k, 1])
    return [(f, n) for f, n in out]


class RangeStore:
    """A sketch of the index by id ranges, for `replay_ranges`: per residue of the run-key step
    M, the pieces (first key, last key, group) sorted by first key; a key is found by its
    residue and a bisection. (Not the simulator's index: no extents, conflicts or copies; it
    measures what the store's own Python costs against the dict's per-key work.)"""

    def __init__(self, mod: int) -> None:
        self.mod = mod
        self.firsts: dict[int, list[int]] = {}  # residue -> sorted first keys
        self.rest: dict[int, list[tuple[int, object]]] = {}  # residue -> (last key, group), in that order
        self.of_group: dict[object, list[tuple[int, int]]] = {}  # group -> its (residue, first key)

    def insert(self, group, ps: list[tuple[int, int]]) -> None:
        m = self.mod
        mine = self.of_group.setdefault(group, [])
        for first, n in ps:
            res = first % m
            fs = self.firsts.get(res)
            if fs is None:
                self.firsts[res], self.rest[res] = [first], [(first + (n - 1) * m, group)]
            else:
                i = bisect_right(fs, first)
                fs.insert(i, first)
                self.rest[res].insert(i, (first + (n - 1) * m, group))
            mine.append((res, first))

    def drop(self, group) -> None:
        for res, first in self.of_group.pop(group, ()):
            fs = self.firsts[res]
            i = bisect_left(fs, first)
            if len(fs) == 1:
                del self.firsts[res], self.rest[res]
            else:
                del fs[i], self.rest[res][i]

    def get(self, key):
        fs = self.firsts.get(key % self.mod)
        if fs is None:
            return None
        i = bisect_right(fs, key) - 1
        if i < 0:
            return None
        last, group = self.rest[key % self.mod][i]
        return group if key <= last else None

    def any_of(self, ps: list[tuple[int, int]]) -> bool:
        m = self.mod
        for first, n in ps:
            fs = self.firsts.get(first % m)
            if fs is None:
                continue
            last = first + (n - 1) * m
            i = bisect_right(fs, last) - 1  # the last piece starting at or before our last key
            if i >= 0 and self.rest[first % m][i][0] >= first:
                return True
        return False


def replay_ranges(log: list, num_dicts: int, mod: int) -> float:
    """CPU s of the same operations on `RangeStore`s, each operation's keys split into pieces
    beforehand (an index of id ranges reads them from the ids' ranges: not counted)."""
    ops = [(kind, n, pieces(keys, mod) if kind != "read" else keys[0], g) for kind, n, keys, g in log]
    stores = [RangeStore(mod) for _ in range(num_dicts)]
    gc.disable()
    t0 = time.process_time()
    for kind, n, x, g in ops:
        st = stores[n]
        if kind == "insert":
            st.insert(g, x)
        elif kind == "pop":
            st.drop(g)
        elif kind == "probe":
            st.any_of(x)
        else:
            st.get(x)
    t = time.process_time() - t0
    gc.enable()
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scheduler")
    ap.add_argument("workload")
    ap.add_argument("replicas", type=int)
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ranges", type=int, default=0, metavar="R",
                    help="also replay on a sketch of an index by id ranges, for runs of R blocks (1: sessions)")
    args = ap.parse_args()
    t0 = time.process_time()
    log, num_dicts = record(args.scheduler, args.workload, args.replicas, args.requests)
    print(f"{args.scheduler} {args.workload} {args.replicas}: recorded in {time.process_time() - t0:.2f} CPU s")
    calls, keys = Counter(), Counter()
    for kind, _, ks, _ in log:
        calls[kind] += 1
        keys[kind] += len(ks)
    for kind in ("insert", "pop", "probe", "read"):
        print(f"  {kind:6s} {calls[kind]:8,d} calls {keys[kind]:10,d} keys")
    step = RUN_KEY_BASE + (args.ranges or 1)
    inserted = sum(len(pieces(ks, step)) for kind, _, ks, _ in log if kind == "insert")
    print(f"  inserted keys as ranges of step RUN_KEY_BASE + {args.ranges or 1}: {inserted:,d}")
    every, state = {"insert", "pop", "probe", "read"}, {"insert", "pop"}
    for _ in range(args.repeat):
        t_all, t_state, t_none = replay(log, num_dicts, every), replay(log, num_dicts, state), replay(log, num_dicts, set())
        print(f"  replay CPU s: all {t_all:.3f}, inserts and pops {t_state:.3f}, loop only {t_none:.3f}")
        if args.ranges:
            print(f"  replay on the range sketch: {replay_ranges(log, num_dicts, RUN_KEY_BASE + args.ranges):.3f} CPU s")


if __name__ == "__main__":
    main()
