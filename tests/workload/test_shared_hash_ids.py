"""A replay tells each request how many of its leading hash ids another request of the run may
share (`Request.num_shared_hash_ids`, `workload/replay.py`'s `shared_counts`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from servesim import load_scenario
from servesim.workload import build_workload
from servesim.workload import replay
from servesim.workload.replay import shared_counts
from servesim.workload.traces.writers import write_trace
from tests.workload.helpers import make

MOONCAKE = str(Path(__file__).resolve().parents[2] / "examples" / "mooncake.yaml")


def test_each_row_keeps_its_ids_up_to_the_last_one_another_row_has():
    ids = np.array([1, 2, 3, 1, 2, 4, 5, 6, 7, 8, 9, 9, 10, 11, 10], dtype=np.int64)
    ends = np.array([0, 3, 6, 8, 8, 11, 12, 15])
    # rows: (1 2 3) (1 2 4) (5 6) () (7 8 9) (9) (10 11 10)
    assert shared_counts(ids, ends) == [2, 2, 1, 0, 3, 1, 3]
    # (5 6): none shared, one kept (a request with ids keeps prefix keys); (7 8 9): 9 is in the
    # next row, so the unshared 7 and 8 before it stay; (10 11 10): an id twice in one row counts
    assert shared_counts(np.array([], dtype=np.int64), np.array([0, 0])) == [0]


@pytest.mark.parametrize("shift", [0, -20, 1 << 40])
def test_ids_counted_by_value_or_sorted_give_the_same_counts(shift):
    """Small non-negative ids are counted by value (`bincount`), others (negative, or far above
    their number) sorted (`unique`): the same counts either way."""
    ids = np.array([1, 2, 3, 1, 2, 4, 5, 6, 7, 8, 9, 9, 10, 11, 10], dtype=np.int64) + shift
    ends = np.array([0, 3, 6, 8, 8, 11, 12, 15])
    assert shared_counts(ids, ends) == [2, 2, 1, 0, 3, 1, 3]
    rng = np.random.default_rng(7)
    many = rng.integers(0, 3000, 5000) + shift
    bounds = np.concatenate(([0], np.sort(rng.integers(0, 5000, 400)), [5000]))
    sorted_way = np.unique(many, return_inverse=True, return_counts=True)
    repeated = sorted_way[2][sorted_way[1]] > 1
    last = np.maximum.accumulate(np.where(repeated, np.arange(1, 5001), 0))
    starts, stops = bounds[:-1], bounds[1:]
    expected = np.where(stops > starts, np.maximum(last[np.maximum(stops - 1, 0)] - starts, 1), 0).tolist()
    assert shared_counts(many, bounds) == expected


def test_the_mooncake_replay_sets_the_counts_from_the_replayed_rows_only():
    sc = load_scenario(MOONCAKE, ["workload.num_requests=300"])
    reqs = list(build_workload(sc.workload, np.random.SeedSequence(0)).arrivals())
    seen: dict[int, int] = {}
    for r in reqs:
        for h in r.hash_ids:
            seen[h] = seen.get(h, 0) + 1
    for r in reqs:
        shared = [i + 1 for i, h in enumerate(r.hash_ids) if seen[h] > 1]
        assert r.num_shared_hash_ids == max(shared[-1] if shared else 0, 1 if r.hash_ids else 0)
    kept = sum(r.num_shared_hash_ids for r in reqs)
    assert 0 < kept < 0.8 * sum(len(r.hash_ids) for r in reqs)  # (most of a Mooncake prompt's ids are its own)


ROWS = [  # (timestamp ms, ids): the rows of test_each_row_keeps_its_ids_up_to_the_last_one_another_row_has
    (0, [1, 2, 3]), (1000, [1, 2, 4]), (2000, [5, 6]), (3000, []), (4000, [7, 8, 9]), (5000, [9]), (6000, [10, 11, 10]),
]


def file_counts(path, **trace) -> list:
    cfg = {"trace": {"name": str(path)} | trace}
    return [r.num_shared_hash_ids for r in make(cfg).arrivals()]


def test_a_trace_file_gets_the_counts_from_a_first_pass(tmp_path, monkeypatch):
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps({"timestamp": t, "input_length": 600 * len(ids) + 1, "output_length": 3}
                                       | ({"hash_ids": ids} if ids else {})) + "\n" for t, ids in ROWS))
    assert file_counts(path) == [2, 2, 1, 0, 3, 1, 3]
    monkeypatch.setattr(replay, "_FOLD_IDS", 2)  # (the counts folded every two ids: the same)
    assert file_counts(path) == [2, 2, 1, 0, 3, 1, 3]
    # only the replayed rows count: from 1.5 s on, 1 and 2 are in one row; up to 4.5 s, 9 is too
    assert file_counts(path, start_s=1.5) == [1, 0, 3, 1, 3]
    assert file_counts(path, end_s=4.5) == [2, 2, 1, 0, 1]
    # a row skipped as bad is skipped by the first pass too (its 6 would make (5 6) keep 2)
    bad = '{"timestamp": 7000, "input_length": "x", "output_length": 3, "hash_ids": [6]}\n'
    path.write_text(path.read_text() + bad)
    assert file_counts(path, skip_bad_rows=True) == [2, 2, 1, 0, 3, 1, 3]


def test_a_file_without_ids_or_with_ids_past_int64_keeps_the_counts_unknown(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("arrival_s,prompt_len,output_len\n0,5,2\n1,5,2\n")
    assert file_counts(path) == [None, None]
    path.write_text(f"arrival_s,prompt_len,output_len,hash_ids\n0,5,2,1 2\n1,5,2,1 {2**64}\n")
    assert file_counts(path) == [None, None]  # (every id keyed)
    # a first row without ids: the file is taken for one without prefix hashes and not read twice
    path.write_text("arrival_s,prompt_len,output_len,hash_ids\n0,5,2,\n1,5,2,1 2\n2,5,2,1 3\n")
    assert file_counts(path) == [None, None, None]


def test_a_file_copy_of_the_mooncake_trace_counts_as_its_arrays(tmp_path):
    sets = ["workload.num_requests=800", "workload.trace.speedup=1"]
    arrays = list(build_workload(load_scenario(MOONCAKE, sets).workload, np.random.SeedSequence(0)).arrivals())
    for name in ("m.jsonl", "m.csv.gz"):
        write_trace(arrays, tmp_path / name)
        assert file_counts(tmp_path / name) == [r.num_shared_hash_ids for r in arrays]
