"""A replay tells each request how many of its leading hash ids another request of the run may
share (`Request.num_shared_hash_ids`, `workload/replay.py`'s `shared_counts`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from servesim import load_scenario
from servesim.workload import build_workload
from servesim.workload.replay import shared_counts

MOONCAKE = str(Path(__file__).resolve().parents[2] / "examples" / "mooncake.yaml")


def test_each_row_keeps_its_ids_up_to_the_last_one_another_row_has():
    ids = np.array([1, 2, 3, 1, 2, 4, 5, 6, 7, 8, 9, 9, 10, 11, 10], dtype=np.int64)
    ends = np.array([0, 3, 6, 8, 8, 11, 12, 15])
    # rows: (1 2 3) (1 2 4) (5 6) () (7 8 9) (9) (10 11 10)
    assert shared_counts(ids, ends) == [2, 2, 1, 0, 3, 1, 3]
    # (5 6): none shared, one kept (a request with ids keeps prefix keys); (7 8 9): 9 is in the
    # next row, so the unshared 7 and 8 before it stay; (10 11 10): an id twice in one row counts
    assert shared_counts(np.array([], dtype=np.int64), np.array([0, 0])) == [0]


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
