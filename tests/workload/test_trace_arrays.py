"""The shipped traces' row arrays (workload/trace_arrays.py) equal their files' parse, and a
replay from an array makes the requests the row-by-row replay makes, field by field."""

import dataclasses

import numpy as np
import pytest

from servesim.workload.trace_arrays import array_path, hash_ids, hash_path, id_runs, parse_rows, read_rows
from servesim.workload.traces.registry import SHIPPED_TRACES, ShippedTrace
from tests.workload.helpers import make

WITH_ARRAYS = ["azure-conv", "azure-code", "mooncake-conversation"]


@pytest.mark.parametrize("name", WITH_ARRAYS)
def test_array_equals_the_parse_of_its_file(name):
    # (if this fails, the trace changed: rebuild with `python -m servesim.workload.trace_arrays`)
    shipped = SHIPPED_TRACES[name]
    rows, runs = read_rows(shipped)
    ids = None if runs is None else hash_ids(runs)
    parsed, parsed_ids = parse_rows(shipped)
    assert len(rows) == len(parsed) == shipped.rows
    assert rows.dtype == parsed.dtype
    for field in parsed.dtype.names:
        assert np.array_equal(rows[field], parsed[field])
    assert rows["arrival_s"].tobytes() == parsed["arrival_s"].tobytes()
    assert (ids is None) == (parsed_ids is None) == (name != "mooncake-conversation")
    if ids is not None:  # every row's hash ids, in file order, from the runs
        assert ids.dtype == np.int64 and np.array_equal(ids, parsed_ids)
        assert len(ids) == rows["num_hash_ids"].sum() == 288_500  # (the trace's README)
        assert len(np.load(hash_path(shipped))) < len(ids) // 8  # stored as runs of consecutive ids


def test_only_traces_of_times_lengths_and_hashes_have_arrays():
    have = sorted(t.name for t in SHIPPED_TRACES.values() if t.has_arrival and array_path(t).is_file())
    assert have == sorted(WITH_ARRAYS)


def test_rows_with_another_block_size_or_attributes_have_no_arrays(tmp_path):
    for extra in ('"hash_block_tokens": 256', '"tenant": "a"'):
        path = tmp_path / "t.jsonl"
        path.write_text('{"timestamp": 0, "input_length": 9, "output_length": 2, "hash_ids": [3, 4]}\n'
                        f'{{"timestamp": 5, "input_length": 9, "output_length": 2, "hash_ids": [3], {extra}}}\n')
        assert parse_rows(ShippedTrace("t", str(path), 2, True, "", "")) is None
    path.write_text('{"timestamp": 0, "input_length": 9, "output_length": 2, "hash_ids": [3, 4]}\n'
                    '{"timestamp": 5, "input_length": 9, "output_length": 2, "hash_ids": [3]}\n')
    rows, ids = parse_rows(ShippedTrace("t", str(path), 2, True, "", ""))
    assert rows["num_hash_ids"].tolist() == [2, 1] and ids.tolist() == [3, 4, 3]


def test_id_runs_give_the_ids_back():
    rng = np.random.default_rng(7)
    for ids in ([5], [0, 1, 2, 0, 1, 7, 9, 10], rng.integers(0, 50, 1000), np.arange(100, 400)):
        ids = np.asarray(ids, dtype=np.int64)
        runs = id_runs(ids)
        assert runs.dtype == np.int32 and (runs[:, 1] > 0).all()
        assert np.array_equal(hash_ids(runs), ids)
        for lo, hi in [(0, 0), (0, 1), (len(ids) - 1, len(ids)), *rng.integers(0, len(ids) + 1, (20, 2)).tolist()]:
            lo, hi = min(lo, hi), max(lo, hi)  # (a slice expands only the runs it crosses)
            assert np.array_equal(hash_ids(runs, lo, hi), ids[lo:hi])
    assert id_runs(np.array([0, 1, 2, 0, 1, 7, 9, 10])).tolist() == [[0, 3], [0, 2], [7, 1], [9, 2]]


SLICES = {
    "whole": {},
    "limit": {"num_requests": 777},
    "window, speedup": {"trace": {"start_s": 600.5, "end_s": 1300, "speedup": 3.0}},
    "duration": {"trace": {"start_s": 100}, "duration_s": 250.25},
    "after the last row": {"trace": {"start_s": 1e6}},
}


@pytest.mark.parametrize("name", WITH_ARRAYS)
@pytest.mark.parametrize("extra", SLICES.values(), ids=SLICES.keys())
def test_array_replay_makes_the_row_replays_requests(name, extra):
    cfg = extra | {"trace": {"name": name} | extra.get("trace", {})}
    fast, slow = make(cfg), make(cfg)
    assert fast._rows is not None  # the array path runs
    slow._rows = None
    # (the count of ids another replayed request shares included: the rows' from a first pass)
    names = [f.name for f in dataclasses.fields(next(iter(make({"trace": {"name": name}}).arrivals())))]
    fast_reqs, slow_reqs = list(fast.arrivals()), list(slow.arrivals())
    got = [tuple(getattr(r, k) for k in names) for r in fast_reqs]
    want = [tuple(getattr(r, k) for k in names) for r in slow_reqs]
    assert got == want
    assert all(0 < r.num_shared_hash_ids <= len(r.hash_ids) for r in fast_reqs if r.hash_ids)
    assert (len(got) == 0) == (extra == SLICES["after the last row"])
    assert all(type(r[1]) is float and type(r[2]) is int for r in got[:3])
    assert all(type(r[4]) is tuple and set(map(type, r[4])) <= {int} for r in got)
    assert any(r[4] for r in got) == (name == "mooncake-conversation" and len(got) > 0)


def test_drawn_attributes_keep_the_row_path():
    assert make({"trace": {"name": "azure-conv"}, "attributes": {"tenants": {"a": 1, "b": 1}}})._rows is None
