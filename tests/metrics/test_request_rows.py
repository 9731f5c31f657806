"""A request table's rows equal the fields of the requests they were reduced from, read one by
one: labels, absent ids, reroutes, moves between replicas, kept tags; in memory and spilled."""

import numpy as np
import pytest

import servesim.metrics.request_table as request_table
from servesim.metrics.request_table import NONE_ID, RequestTable
from servesim.workload.request import Request, RequestState


def _requests(n: int) -> list[Request]:
    out = []
    for i in range(n):
        r = Request(i, 0.5 * i, 10 + i, 3 + i % 4)
        r.tenant = ["a", "b", None, "c"][i % 4]
        r.slo_class = "gold" if i % 3 == 0 else None
        r.lora = "ad-2" if i % 5 == 0 else "ad-1" if i % 5 == 1 else None
        r.session_id = i // 2 if i % 2 else None
        r.program_id = 7 if i == 4 else None
        r.priority, r.is_offline = i % 3, i % 2 == 0
        r.ttft_slo_s = 0.25 if i % 3 == 0 else None
        r.state = [RequestState.FINISHED, RequestState.REJECTED, RequestState.DROPPED][i % 3]
        r.first_token_s = None if r.state == RequestState.REJECTED else 1.0 + i
        r.finish_s = 2.0 + i
        r.num_preemptions, r.num_cached_tokens, r.replica = i % 2, 16 * (i % 3), i % 3
        r.token_steps = [] if r.state == RequestState.REJECTED else [i, i + 1, i + 5, i + 6]
        if i % 7 == 3:
            r.extra = {"num_reroutes": 2, "lora_hit": True, "other": 1}
        if i % 11 == 5 and r.token_steps:  # a crash moved it: its second run on replica 9
            r.moves = [(0, 1), (2, 9)]
        out.append(r)
    return out


@pytest.mark.parametrize("spill", [False, True])
def test_rows_are_the_requests_fields(spill, tmp_path, monkeypatch):
    monkeypatch.setattr(request_table, "FLUSH_ROWS", 16)  # many chunks, each finishing out of arrival order
    reqs = _requests(100)
    table = RequestTable(folder=str(tmp_path) if spill else None)
    for r in reqs:
        table.append(r)
    for r in sorted(reqs, key=lambda r: (r.id % 10, -r.id)):
        table.done(r)
    table.close()
    c = table.cols
    assert np.asarray(c["id"]).tolist() == list(range(100))
    assert table.labels("tenant").tolist() == [r.tenant for r in reqs]
    assert table.labels("slo_class").tolist() == [r.slo_class for r in reqs]
    assert table.labels("lora").tolist() == [r.lora for r in reqs]
    assert np.asarray(c["session_id"]).tolist() == [NONE_ID if r.session_id is None else r.session_id for r in reqs]
    assert np.asarray(c["program_id"]).tolist() == [NONE_ID if r.program_id is None else r.program_id for r in reqs]
    assert np.asarray(c["state"]).tolist() == [int(r.state) for r in reqs]
    assert np.asarray(c["num_reroutes"]).tolist() == [2 if r.id % 7 == 3 else 0 for r in reqs]
    ftt = np.asarray(c["first_token_s"])
    assert np.isnan(ftt[1::3]).all() and ftt[0::3].tolist() == [1.0 + i for i in range(0, 100, 3)]
    assert np.asarray(c["ttft_slo_s"])[0::3].tolist() == [0.25] * 34 and np.isnan(c["ttft_slo_s"][1])
    for name in ("priority", "is_offline", "arrival_s", "prompt_len", "output_len", "num_preemptions",
                 "num_cached_tokens", "replica"):
        assert np.asarray(c[name]).tolist() == [getattr(r, name) for r in reqs], name
    assert [i for i in range(100) if table.extras.get(i)] == list(range(3, 100, 7))
    assert all(table.extras.get(i) == {"lora_hit": True} for i in range(3, 100, 7))
    for r in reqs:
        assert table.token_steps(r.id).tolist() == [s for a, b in zip(r.token_steps[::2], r.token_steps[1::2])
                                                     for s in range(a, b + 1)]
    _, starts, _ = table.token_runs_of(slice(0, 100))
    assert len(starts) == sum(len(r.token_steps) // 2 for r in reqs)


def test_runs_index_the_replica_each_was_served_on():
    reqs = _requests(40)
    table = RequestTable()
    for r in reqs:
        table.append(r)
        table.done(r)
    table.close(offsets=[0, 1000, 2000] + [0] * 6 + [9000])  # replica k's steps start at offsets[k]
    moved = reqs[5]  # moves [(0, 1), (2, 9)]: first run on replica 1, second on 9
    assert table.token_steps(5).tolist() == [1005, 1006, 9010, 9011]
    assert table.token_steps(2).tolist() == [2002, 2003, 2007, 2008]  # replica 2, never moved
    assert moved.moves and not reqs[2].moves


class _CountingNumpy:
    """numpy as `request_table` sees it, recording how many values each `fromiter` converts."""

    def __init__(self) -> None:
        self.counts: list[int] = []

    def __getattr__(self, name):
        return getattr(np, name)

    def fromiter(self, values, dtype, count=-1):
        self.counts.append(count)
        return np.fromiter(values, dtype, count)


@pytest.mark.parametrize("values, dtype", [
    ([0] * 1024, np.int64), ([-1] * 1024, np.int32), ([False] * 1024, np.bool_), ([4] * 1024, np.int8),
    ([None] * 1024, np.float64), ((7, 7.0, 7), np.int64)])
def test_a_column_the_run_does_not_vary_converts_its_first_value_once(values, dtype, monkeypatch):
    spy = _CountingNumpy()
    monkeypatch.setattr(request_table, "np", spy)
    got = request_table._column(values, dtype)
    assert spy.counts == [1]  # (the constant path ran: one value converted, not len(values))
    want = np.fromiter(values, dtype, len(values))
    assert got.dtype == want.dtype and got.tobytes() == want.tobytes()


@pytest.mark.parametrize("values, dtype", [
    ([0.0, -0.0, 0.0], np.float64),  # (equal, but -0.0 is another float: converted one by one)
    ([2.0, 2.0, 2.0], np.float64),  # (a float column is taken whole unless every value is None)
    ([None, 1.0, None], np.float64), ([3, 3, 4], np.int64), ([5], np.int64)])
def test_a_column_that_varies_or_holds_floats_converts_every_value(values, dtype, monkeypatch):
    spy = _CountingNumpy()
    monkeypatch.setattr(request_table, "np", spy)
    got = request_table._column(values, dtype)
    assert spy.counts == [len(values)]
    want = np.fromiter(values, dtype, len(values))
    assert got.tobytes() == want.tobytes()
    if values == [0.0, -0.0, 0.0]:
        assert np.signbit(got).tolist() == [False, True, False]


def test_a_constant_column_out_of_range_fails_as_one_converted_whole():
    with pytest.raises(OverflowError):
        np.fromiter([1 << 40] * 3, np.int32, 3)
    with pytest.raises(OverflowError):
        request_table._column([1 << 40] * 3, np.int32)
