"""benchmarks/bench_prefix_dict.py: a cell's prefix-index dict operations are recorded without
changing the index's classes, keys split into ranges as the run keys step, and the range sketch
answers every recorded probe and read as the dict does. (Its timings are the benchmark's business.)"""

from __future__ import annotations

import importlib.util
import sys
from collections import deque
from itertools import repeat
from pathlib import Path

from servesim.replica import prefix_index, prefix_registration
from servesim.replica.block_keys import RUN_KEY_BASE

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))  # (it imports bench_matrix, as it does when run)
_spec = importlib.util.spec_from_file_location("bench_prefix_dict", ROOT / "benchmarks" / "bench_prefix_dict.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)
sys.path.remove(str(ROOT / "benchmarks"))

M = RUN_KEY_BASE + 1


def test_pieces_follow_the_run_key_step():
    a, b = 7 * RUN_KEY_BASE, (1 << 48) * RUN_KEY_BASE + 40
    keys = [a, a + M, a + 2 * M, b, b + M, b + 3 * M, (None, 5)]
    assert bench.pieces(keys, M) == [(a, 3), (b, 2), (b + 3 * M, 1), ((None, 5), 1)]
    assert bench.pieces([a, a + M], M + 31) == [(a, 1), (a + M, 1)]  # (another step: no piece)


def test_range_sketch_answers_as_the_dict():
    init, drop = prefix_index.PrefixIndex.__init__, prefix_registration.PrefixRegistration.drop
    log, num_dicts = bench.record("vllm", "sessions", 8, 1000)
    assert (prefix_index.PrefixIndex.__init__, prefix_registration.PrefixRegistration.drop) == (init, drop)
    assert num_dicts == 8
    kinds = {kind for kind, _, _, _ in log}
    assert kinds == {"insert", "pop", "probe", "read"}
    inserted = [keys for kind, _, keys, _ in log if kind == "insert"]
    num_keys, num_pieces = sum(map(len, inserted)), sum(len(bench.pieces(k, M)) for k in inserted)
    assert num_pieces * 10 < num_keys  # (generated contexts: a few ranges of ids each)
    dicts = [{} for _ in range(num_dicts)]
    stores = [bench.RangeStore(M) for _ in range(num_dicts)]
    answers = []
    for kind, n, keys, group in log:
        d, store = dicts[n], stores[n]
        if kind == "insert":
            d.update(zip(keys, repeat(group)))
            store.insert(group, bench.pieces(keys, M))
        elif kind == "pop":
            deque(map(d.pop, keys, repeat(None)), maxlen=0)
            store.drop(group)
        elif kind == "probe":
            answers.append((not d.keys().isdisjoint(keys), store.any_of(bench.pieces(keys, M))))
        else:
            answers.append((d.get(keys[0]) is not None, store.get(keys[0]) is not None))
            assert store.get(keys[0]) == d.get(keys[0])
    assert all(x == y for x, y in answers)
    assert {x for x, _ in answers} == {True, False}  # (both answers met)
    assert all(not d for d in dicts) == all(not s.firsts for s in stores)
