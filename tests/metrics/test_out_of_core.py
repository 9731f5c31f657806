"""The passes after a run, out of core: the same bytes as the passes over whole columns.

Every size that decides what stays in memory is made tiny, so a small run goes through every
file path (row chunks merged into arrival order, percentiles and means from spilled values,
run bounds in files per chunk of steps); each test asserts that path ran."""

from __future__ import annotations

import json

import numpy as np

from servesim import load_scenario, simulate
from servesim.metrics import itl, request_table, row_spill
from servesim.metrics.exact import WeightedValues
from servesim.metrics.stream_stats import StreamStats, pairwise_sum, stats
from servesim.output import request_rows

SETS = [  # preemptions (runs with gaps), 3 replicas, two tenants and an SLO (groups, attainment)
    "replicas=3", "workload.trace.speedup=12", "workload.trace.end_s=120", "engine.gpu_memory_utilization=0.25",
    "workload.attributes.tenants={a: 1, b: 1}", "slo.ttft_s=0.5", "slo.tpot_s=0.05"]


def test_pairwise_sum_adds_in_numpys_order():
    rng = np.random.default_rng(3)
    for n in (0, 1, 7, 129, 70_001, 300_017):
        a = rng.lognormal(0, 4, n)
        assert pairwise_sum(lambda lo, hi: a[lo:hi], n) == a.sum()  # bit for bit, not approximately
    # a plain left-to-right sum differs in the last bits: the order matters
    a = rng.lognormal(0, 4, 300_017)
    assert float(np.cumsum(a)[-1]) != float(a.sum())


def test_stream_stats_from_a_file_equal_stats_of_the_whole_column(monkeypatch, tmp_path):
    monkeypatch.setattr(StreamStats, "memory_values", 1000)
    monkeypatch.setattr(WeightedValues, "memory_pairs", 500)
    rng = np.random.default_rng(4)
    values = np.round(rng.exponential(0.2, 20_000), 3)  # many ties
    values[::7] = np.nan
    s = StreamStats(tmp_path)
    for part in np.array_split(values, 37):
        s.add(part)
    assert s._file is not None  # the values went to a file
    assert s.result() == stats(values)
    signed = StreamStats(tmp_path)
    signed.add(values - 0.1)
    assert signed.result() == stats(values - 0.1)  # negative values: read back whole


def test_run_folder_is_the_same_with_every_pass_out_of_core(monkeypatch, tmp_path):
    from servesim.output import write_run

    whole = simulate(load_scenario("examples/azure-conv.yaml", SETS), keep_requests=True)
    assert not whole.table.spilled
    monkeypatch.setattr(request_table, "FLUSH_ROWS", 50)
    monkeypatch.setattr(request_table, "ROWS_PER_PASS", 64)
    monkeypatch.setattr(row_spill, "BLOCK_ROWS", 100)
    monkeypatch.setattr(StreamStats, "memory_values", 40)
    monkeypatch.setattr(WeightedValues, "memory_pairs", 300)
    monkeypatch.setattr("servesim.metrics.step_ends.CHUNK", 512)
    files = []
    add = itl.BoundFiles.add
    monkeypatch.setattr(itl.BoundFiles, "add", lambda self, b: (files.append(len(b)), add(self, b)))
    spilled = simulate(load_scenario("examples/azure-conv.yaml", SETS), keep_requests=False)
    assert spilled.table.spilled and len(spilled.table) > 400
    a, b = spilled.summary(), whole.summary()
    assert len(files) > 10  # run bounds went to files per chunk of steps
    a.pop("wall_time_s"), b.pop("wall_time_s")
    assert a["num_preemptions"] > 0 and spilled.table.cols["num_runs"].max() > 1 and set(a["per_tenant"]) == {"a", "b"} and 0 < a["slo_attainment"] < 1
    assert json.dumps(a) == json.dumps(b)  # the same keys in the same order, the same bits
    assert list(request_rows(spilled)) == list(request_rows(whole))
    t, w = spilled.table, whole.table
    for key in ("run_starts", "run_ends", "first_run", "num_runs"):
        assert np.array_equal(getattr(t, key), getattr(w, key)), key
    sa, sb = write_run(spilled, tmp_path / "a", a), write_run(whole, tmp_path / "b", b)
    for name in ("summary.json", "requests.csv", "timeseries.csv"):
        assert (sa / name).read_bytes() == (sb / name).read_bytes(), name


def test_merge_reads_only_the_chunks_that_overlap_a_block(monkeypatch):
    """Open loop: rows end nearly in arrival order, so a block of rows is found in a few chunks."""
    monkeypatch.setattr(request_table, "FLUSH_ROWS", 32)
    monkeypatch.setattr(row_spill, "BLOCK_ROWS", 128)
    reads = []
    read = row_spill.RowSpill._read
    monkeypatch.setattr(row_spill.RowSpill, "_read", lambda self, f, chunk, name, lo, hi: (
        reads.append(name) if name == "seq" else None, read(self, f, chunk, name, lo, hi))[1])
    sets = ["workload.trace=null", "workload.arrival.process=poisson", "workload.lengths.dataset=sharegpt",
            "workload.arrival.rate_per_s=4", "workload.num_requests=1024"]
    result = simulate(load_scenario(None, sets), keep_requests=False)
    assert np.array_equal(result.table.cols["id"], np.arange(1024))
    # 8 blocks of 128 rows from 32 chunks of 32: each chunk read for the one or two blocks it spans
    assert 32 <= len(reads) <= 2 * 32
