"""The time series out of core: partials spooled to files as the run makes them, the series
built and written a block of intervals at a time, byte for byte the series built at once.

Block and chunk sizes are made tiny so a small run crosses many blocks and many spooled pieces;
each test asserts that the path ran."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import numpy as np
import pytest

from servesim import load_scenario, simulate
from servesim.metrics import series_parts
from servesim.metrics import timeseries as ts_module
from servesim.metrics.recorder import Recorder, StepLog, positions
from servesim.metrics.series_parts import Spool, Stream, TOKENS, records
from servesim.metrics.step_reduce import LEVELS, StepReducer
from servesim.output import write_run

SETS = [  # 3 replicas, preemptions, two tenants, 50 ms intervals (thousands of rows, idle gaps)
    "replicas=3", "workload.trace.speedup=12", "workload.trace.end_s=120", "engine.gpu_memory_utilization=0.25",
    "workload.attributes.tenants={a: 1, b: 1}", "output.timeseries_interval_s=0.05"]


def _reference(reducers: list[StepReducer], arrival_s: np.ndarray, finish_s: np.ndarray,
               interval_s: float) -> dict[str, np.ndarray]:
    """The series over whole arrays (the code before the blocks), from the spooled partials."""
    def whole(spool):
        pieces = list(spool.pieces())
        return np.concatenate(pieces) if pieces else np.empty(0, dtype=spool.dtype)

    parts = [(whole(r.parts.ranges), whole(r.parts.tokens), whole(r.parts.marks)) for r in reducers]
    end = max(max((r.last_end_s for r in reducers if r.num_steps), default=0.0),
              float(arrival_s.max()) if len(arrival_s) else 0.0)
    n = max(int(np.ceil(end / interval_s)), 1)

    def index(t):
        return np.minimum((t // interval_s).astype(np.int64), n - 1)

    points = np.union1d(index(arrival_s), index(finish_s[np.isfinite(finish_s)]))
    lo = np.concatenate([[0], *(np.minimum(r["k"], n - 1) for r, _, _ in parts), points])
    hi = np.concatenate([[0], *(np.minimum(r["hi"], n - 1) for r, _, _ in parts), points])
    order = np.argsort(lo, kind="stable")
    lo, hi = lo[order], hi[order]
    reach = np.maximum.accumulate(hi)
    new = np.concatenate(([True], lo[1:] > reach[:-1] + 1))
    starts = lo[new]
    ends = np.append(reach[np.flatnonzero(new)[1:] - 1], reach[-1])
    rows = np.concatenate((np.sort(np.concatenate((positions(starts, ends - starts + 1), ends[:-1] + 1))), [n]))
    width = np.diff(rows) * interval_s
    cols = {"time_s": (rows * interval_s)[:-1], "interval_s": width}

    def count(at, weights=None):
        return np.bincount(np.searchsorted(rows, at, side="right") - 1, weights=weights,
                           minlength=len(width))[:len(width)]

    cols["arrivals"] = count(index(arrival_s))
    cols["finished"] = count(index(finish_s[np.isfinite(finish_s)]))
    cols["prompt_tokens"] = sum(count(np.minimum(t["k"], n - 1), t["prompt"]) for _, t, _ in parts)
    cols["output_tokens"] = sum(count(np.minimum(t["k"], n - 1), t["output"]) for _, t, _ in parts)
    areas = []
    for _, _, m in parts:
        keys, values = m["k"], m["v"]
        last = len(keys) - 1 - np.unique(keys[::-1], return_index=True)[1]
        keys, values = keys[last], values[last]
        i = np.searchsorted(keys, rows, side="right") - 1
        out = values[np.maximum(i, 0)] if len(keys) else np.zeros((len(rows), 3))
        out[i < 0] = 0.0
        areas.append(out)
    for i, name in enumerate(LEVELS):
        cols[name] = sum(np.diff(a[:, i]) / width for a in areas)
    return cols


def _count_blocks(monkeypatch) -> list[int]:
    calls = []
    rows = ts_module._rows
    monkeypatch.setattr(ts_module, "_rows", lambda busy_k, *a: (calls.append(len(busy_k)), rows(busy_k, *a))[1])
    return calls


def test_run_folder_is_the_same_with_the_series_built_in_blocks(monkeypatch, tmp_path):
    whole = simulate(load_scenario("examples/azure-conv.yaml", SETS), keep_requests=True, keep_steps=True)
    assert whole.replicas[0].stats.parts.ranges.path is None  # partials held in memory
    b = whole.summary()
    b.pop("wall_time_s")
    sb = write_run(whole, tmp_path / "b", b)  # (one block)
    monkeypatch.setattr(Recorder, "CHUNK_STEPS", 50)  # many spooled pieces per replica
    monkeypatch.setattr(series_parts, "HELD_BYTES", 0)  # (each beyond the first to the file)
    monkeypatch.setattr(ts_module, "BLOCK_INTERVALS", 32)
    blocks = _count_blocks(monkeypatch)
    spilled = simulate(load_scenario("examples/azure-conv.yaml", SETS), keep_requests=False)
    parts = spilled.replicas[0].stats.parts
    assert parts.marks.path.stat().st_size > 0 and len(parts.marks.lengths) > 10  # pieces went to a file
    assert spilled.replicas[0].stats.nbytes() < 100 * len(parts.marks.lengths)  # nothing per interval held
    a = spilled.summary()
    a.pop("wall_time_s")
    assert json.dumps(a) == json.dumps(b)
    sa = write_run(spilled, tmp_path / "a", a)
    assert len(blocks) > 10  # the series was built in many blocks of 32 intervals
    two = [spilled.timeseries_blocks(), spilled.timeseries_blocks()]  # built at once, each with its own files
    assert [next(g)["time_s"].tolist() for g in two] == [next(spilled.timeseries_blocks())["time_s"].tolist()] * 2
    del two
    gc.collect()
    assert not list(Path(spilled.spill.name).glob("series-points-*"))  # scratch files go when a series is done
    text = (sa / "timeseries.csv").read_text()
    assert text.count("\n") > 400 and text == (sb / "timeseries.csv").read_text()
    ref = _reference([r.stats for r in spilled.replicas], spilled.table.cols["arrival_s"],
                     spilled.table.cols["finish_s"], 0.05)
    got = spilled.timeseries()
    for name, values in ref.items():  # bit for bit the series over whole arrays
        assert values.dtype == got[name].dtype and np.array_equal(values, got[name]), name


def _log(spans: list[tuple[float, float]]) -> StepLog:
    start, end = (np.array(x, dtype=float) for x in zip(*spans))
    n = len(spans)
    ones = np.ones(n, dtype=np.int32)
    return StepLog(start_s=start, end_s=end, prefill_tokens=3 * ones, output_tokens=ones, num_running=2 * ones,
                   num_waiting=np.arange(n, dtype=np.int32), kv_used_blocks=4 * ones, num_gpu_blocks=10)


@pytest.mark.parametrize("block", [1, 2, 3, 64])
def test_edges_gaps_and_the_last_interval(monkeypatch, block):
    """Steps on interval edges, a step chunk ending inside an interval the next continues, idle
    gaps across blocks, an arrival exactly at the end (clipped into the last interval)."""
    monkeypatch.setattr(ts_module, "BLOCK_INTERVALS", block)
    chunks = [[(0.0, 1.0), (1.0, 2.5)], [(2.5, 2.75), (2.75, 3.0)], [(7.0, 7.2)], [(7.2, 9.0), (9.0, 12.0)]]
    r = StepReducer(1.0, 10)
    for spans in chunks:
        r.add(_log(spans))
    arrival, finish = np.array([0.0, 2.6, 6.9, 15.0]), np.array([2.5, 3.0, np.nan, 12.0])
    got = ts_module.series([r], lambda: [(arrival[:2], finish[:2]), (arrival[2:], finish[2:])], 1.0)
    ref = _reference([r], arrival, finish, 1.0)
    assert got["time_s"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0]
    assert got["interval_s"][-1] == 1.0 and got["arrivals"][-1] == 1  # 15.0: the end, in interval 14
    for name, values in ref.items():
        assert np.array_equal(values, got[name]), name


def test_empty_blocks_are_skipped(monkeypatch, tmp_path):
    monkeypatch.setattr(ts_module, "BLOCK_INTERVALS", 64)
    blocks = _count_blocks(monkeypatch)
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,prompt_len,output_len\n0,100,10\n1e7,100,10\n")
    ts = simulate(load_scenario(None, [f"workload.trace.name={trace}"])).timeseries()
    assert ts["time_s"].tolist() == [0.0, 1.0, 1e7] and ts["interval_s"].tolist() == [1.0, 1e7 - 1, 1.0]
    assert len(blocks) == 2  # of 156,250 blocks of 64 intervals, the two that hold something


def test_stream_takes_in_key_order_with_the_last_value_of_a_key():
    s = Spool(TOKENS)
    for keys in ([0, 2, 5], [5, 6], [3, 9], [9, 10]):  # a later piece may start below an earlier one's end
        k = np.array(keys)
        s.append(records(TOKENS, k=k, prompt=k * 10.0 + len(s.lengths), output=np.zeros(len(k))))
    stable, last = Stream(s), Stream(s, last_wins=True)
    assert stable.take(5)["k"].tolist() == [0, 2, 3]
    assert stable.next_key() == 5
    assert stable.take(None)["prompt"].tolist() == [50.0, 51.0, 61.0, 92.0, 93.0, 103.0]
    assert last.take(10)["prompt"].tolist() == [0.0, 20.0, 32.0, 51.0, 61.0, 93.0]
    assert last.take(None)["k"].tolist() == [10] and last.next_key() is None


def test_elastic_columns_are_the_same_in_blocks(monkeypatch):
    sets = ["autoscaler.name=hpa", "workload.trace.end_s=600", "output.timeseries_interval_s=0.5"]
    whole = simulate(load_scenario("examples/azure-conv.yaml", sets)).timeseries()
    monkeypatch.setattr(ts_module, "BLOCK_INTERVALS", 16)
    blocks = _count_blocks(monkeypatch)
    blocked = simulate(load_scenario("examples/azure-conv.yaml", sets)).timeseries()
    assert len(blocks) > 10 and "power_w" in blocked and blocked["num_replicas"].max() >= 1
    assert whole.keys() == blocked.keys()
    for name in whole:
        assert np.array_equal(whole[name], blocked[name]), name
