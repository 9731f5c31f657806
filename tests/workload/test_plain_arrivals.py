"""Open-loop requests made a block at a time (`GeneratedWorkload._plain_arrivals`) are the
requests `_start_unit` makes one by one: same ids, times, lengths and every other field."""

import dataclasses

import pytest

from tests.workload.helpers import make

CASES = {
    "poisson, dataset, limit inside a block": {"arrival": {"process": "poisson", "rate_per_s": 5},
                                               "lengths": {"dataset": "sharegpt"}, "num_requests": 9000},
    "limit at a block's end": {"lengths": {"dataset": "sharegpt"}, "num_requests": 8192},
    "gamma, clipped dataset, duration": {"arrival": {"process": "gamma", "rate_per_s": 20, "cv": 3.0},
                                         "lengths": {"dataset": "sharegpt", "max_prompt_tokens": 1000,
                                                     "max_output_tokens": 64}, "duration_s": 250},
    "weibull, uniform lengths": {"arrival": {"process": "weibull", "rate_per_s": 2, "cv": 0.5},
                                 "lengths": {"prompt_tokens": [1, 900], "output_tokens": 7}, "num_requests": 5000},
    "a rate curve that ends": {"arrival": {"process": "poisson", "curve": {
        "kind": "piecewise", "points": [[0, 5.0], [1000, 0.0]]}}, "duration_s": 5000},
    "hash block size": {"hash_block_tokens": 16, "num_requests": 50},
}


NAMES = [f.name for f in dataclasses.fields(make({}).arrivals().__next__())]


def _rows(reqs):
    return [tuple(getattr(r, name) for name in NAMES) for r in reqs]


@pytest.mark.parametrize("cfg", CASES.values(), ids=CASES.keys())
def test_block_path_makes_the_requests_of_the_unit_path(cfg):
    fast, slow = make(cfg, 3), make(cfg, 3)
    assert fast._plain  # the block path runs
    slow._plain = False
    got, want = list(fast.arrivals()), list(slow.arrivals())
    assert len(got) == len(want) > 0
    assert _rows(got) == _rows(want)
    assert [type(r.arrival_s) for r in got[:3]] == [float] * 3 and type(got[0].prompt_len) is int


@pytest.mark.parametrize("name", [n for n, cfg in CASES.items() if cfg.get("lengths", {}).get("dataset")])
def test_a_datasets_rows_come_a_block_per_block_of_arrivals(name):
    # (the lengths drawn as two lists per block of arrival times, not a pair per request from the stream)
    fast = make(CASES[name], 3)
    blocks, draw = [], fast._row_block
    fast._row_block = lambda: blocks.append(1) or draw()
    fast._length_pairs = iter(())  # (read, it would fail the run: `zip()` unpacks to nothing)
    got = list(fast.arrivals())
    assert len(blocks) == -(-len(got) // 4096) > 1
    assert make({"lengths": {"prompt_tokens": [1, 9], "output_tokens": 3}})._row_block is None  # (no rows: the stream)


def test_a_curve_that_ends_stops_the_stream():
    reqs = list(make(CASES["a rate curve that ends"], 1).arrivals())
    assert 4500 < len(reqs) < 5500 and reqs[-1].arrival_s <= 1000  # about 5 req/s for 1,000 s, then none


@pytest.mark.parametrize("cfg", [
    {"arrival": {"process": "onoff"}}, {"attributes": {"tenants": {"a": 1, "b": 1}}},
    {"sessions": {"turns": 3}}, {"arrival": {"process": "closed", "users": 4}},
    {"shared_prefix": {"tokens": 1024, "groups": 2}}])
def test_per_unit_workloads_keep_the_unit_path(cfg):
    assert not make(cfg | {"num_requests": 10})._plain
