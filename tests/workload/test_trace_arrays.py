"""The shipped traces' row arrays (workload/trace_arrays.py) equal their files' parse, and a
replay from an array makes the requests the row-by-row replay makes, field by field."""

import dataclasses

import numpy as np
import pytest

from servesim.workload.trace_arrays import array_path, parse_rows
from servesim.workload.traces.registry import SHIPPED_TRACES
from tests.workload.helpers import make

WITH_ARRAYS = ["azure-conv", "azure-code"]


@pytest.mark.parametrize("name", WITH_ARRAYS)
def test_array_equals_the_parse_of_its_file(name):
    # (if this fails, the trace changed: rebuild with `python -m servesim.workload.trace_arrays`)
    shipped = SHIPPED_TRACES[name]
    rows = np.load(array_path(shipped))
    parsed = parse_rows(shipped)
    assert len(rows) == len(parsed) == shipped.rows
    for field in ("arrival_s", "prompt_len", "output_len"):
        assert np.array_equal(rows[field], parsed[field])
    assert rows["arrival_s"].tobytes() == parsed["arrival_s"].tobytes()


def test_only_traces_of_times_and_lengths_have_arrays():
    have = sorted(t.name for t in SHIPPED_TRACES.values() if t.has_arrival and array_path(t).is_file())
    assert have == sorted(WITH_ARRAYS)
    assert parse_rows(SHIPPED_TRACES["mooncake-conversation"]) is None  # prefix hashes: read row by row


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
    names = [f.name for f in dataclasses.fields(next(iter(make({"trace": {"name": name}}).arrivals())))]
    got = [tuple(getattr(r, k) for k in names) for r in fast.arrivals()]
    want = [tuple(getattr(r, k) for k in names) for r in slow.arrivals()]
    assert got == want
    assert (len(got) == 0) == (extra == SLICES["after the last row"])
    assert all(type(r[1]) is float and type(r[2]) is int for r in got[:3])


def test_drawn_attributes_keep_the_row_path():
    assert make({"trace": {"name": "azure-conv"}, "attributes": {"tenants": {"a": 1, "b": 1}}})._rows is None
