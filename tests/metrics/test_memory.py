"""Bounded memory: finished requests become compact rows and are let go; steps are held as
typed columns. Asserted by counting objects and traced bytes, never by timing."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest

from servesim import load_scenario, simulate
from servesim.metrics.recorder import BlockGrowth, Recorder
from servesim.output import request_rows
from servesim.workload.request import Request

POISSON = ["workload.trace=null", "workload.arrival.process=poisson", "workload.lengths.dataset=sharegpt",
           "workload.arrival.rate_per_s=4", "workload.num_requests=5000"]


def live_requests() -> int:
    return sum(type(o) is Request for o in gc.get_objects())


def peak_live_requests(keep: bool) -> tuple[int, object]:
    """Request objects of this run alive each time 2,000 more requests are done (the progress
    callback), over those alive before it (other tests in this process may hold some)."""
    gc.collect()
    before = live_requests()
    seen = []
    result = simulate(load_scenario(None, POISSON), lambda done, total, now_s: seen.append(live_requests()),
                      keep_requests=keep)
    return max(seen) - before, result


def test_finished_requests_are_let_go_during_an_open_loop_run():
    peak, result = peak_live_requests(keep=False)
    # only the requests in flight (and the one arrival pending) are alive: none of the 4,000+ done
    assert peak < 200
    assert len(result.table) == 5000
    with pytest.raises(ValueError, match="keep_requests=True"):
        result.requests
    kept_peak, kept = peak_live_requests(keep=True)
    assert kept_peak >= 4000 and len(kept.requests) == 5000


def test_a_finished_request_costs_under_200_bytes_of_rows():
    result = simulate(load_scenario(None, POISSON[:-1] + ["workload.num_requests=2000"]), keep_requests=False)
    t = result.table
    nbytes = sum(c.nbytes for c in t.cols.values()) + t.run_starts.nbytes + t.run_ends.nbytes + t.first_run.nbytes
    assert nbytes / len(t) < 200


def test_rows_and_summary_do_not_depend_on_keeping_the_requests():
    # a crash moves requests between replicas (token runs on two step logs), sessions send follow-ups
    sets = ["replicas=2", "faults.crashes=[{replica: 1, at_s: 20, recovery_s: 5}]", "workload.trace.end_s=60"]
    a = simulate(load_scenario("examples/azure-conv.yaml", sets), keep_requests=False)
    b = simulate(load_scenario("examples/azure-conv.yaml", sets), keep_requests=True)
    assert any(r.moves for r in b.requests)
    sa, sb = a.summary(), b.summary()
    sa.pop("wall_time_s"), sb.pop("wall_time_s")
    assert sa == sb
    assert list(request_rows(a)) == list(request_rows(b))
    c = a.table.cols
    assert c["id"].tolist() == [r.id for r in b.requests]
    assert c["finish_s"].tolist() == [r.finish_s for r in b.requests]


def test_recorder_holds_8_bytes_per_fast_forwarded_step():
    rec = Recorder()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        t = 0.0
        for i in range(200):  # 200 stretches of 1,000 decode steps, 4 requests each
            ends = [t + 0.01 * (j + 1) for j in range(1000)]
            growth = BlockGrowth(10, [3, 5, 7, 9], [1000, 1000, 1000, 1000], 16, [])
            rec.log_decode_steps(t, ends, [4] * 1000, 2, growth)
            t = ends[-1]
            del ends
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert rec.num_steps == 200_000
    assert held < 9 * 200_000  # a float64 end time per step (batch sizes as runs: one per stretch here)
    log = rec.step_log(1000)
    assert log.end_s[-1] == pytest.approx(2000.0) and log.num_running.dtype == np.int32
    assert int(log.kv_used_blocks[0]) == 10 and int(log.output_tokens.sum()) == 800_000
    assert (log.num_running == 4).all() and len(log.num_running) == 200_000


def test_spilled_rows_give_the_same_run_folder_byte_for_byte(tmp_path, monkeypatch):
    import servesim.metrics.request_table as request_table
    from servesim.metrics.row_spill import MappedColumns, RowSpill
    from servesim.output import write_run

    monkeypatch.setattr(request_table, "FLUSH_ROWS", 16)  # many chunks
    chunks = []
    write = RowSpill.write
    monkeypatch.setattr(RowSpill, "write", lambda self, cols, *runs: (chunks.append(len(cols[0])),
                                                                      write(self, cols, *runs)))
    sets = ["replicas=2", "faults.crashes=[{replica: 1, at_s: 20, recovery_s: 5}]", "workload.trace.end_s=60"]
    folders = []
    for keep in (False, True):
        result = simulate(load_scenario("examples/azure-conv.yaml", sets), keep_requests=keep)
        summary = result.summary()
        summary.pop("wall_time_s")
        folders.append(write_run(result, tmp_path / str(keep), summary))
        assert isinstance(result.table.cols, MappedColumns) is not keep
    n = len(result.table)
    # rows went to disk 16 at a time as they ended (the last chunk: those left at the end)
    assert n > 150 and sum(chunks) == n and max(chunks) == 16 and len(chunks) >= n // 16
    for name in ("summary.json", "requests.csv", "timeseries.csv"):
        assert (folders[0] / name).read_bytes() == (folders[1] / name).read_bytes(), name


def test_a_failed_run_leaves_no_scratch_files(tmp_path, monkeypatch):
    import tempfile

    import servesim.simulation as simulation

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def fail(*args):
        raise RuntimeError("invariant")

    monkeypatch.setattr(simulation, "check_invariants", fail)
    with pytest.raises(RuntimeError, match="invariant"):
        simulate(load_scenario(None, POISSON[:-1] + ["workload.num_requests=300"]), keep_requests=False)
    assert list(tmp_path.iterdir()) == []


def test_parquet_is_written_in_row_groups_with_the_csv_values(tmp_path, monkeypatch):
    pq = pytest.importorskip("pyarrow.parquet")
    import csv

    import servesim.output as output

    monkeypatch.setattr(output, "ROW_CHUNK", 50)
    sets = POISSON[:-1] + ["workload.num_requests=120", "workload.attributes.tenants={a: 1, b: 1}"]
    result = simulate(load_scenario(None, sets), keep_requests=False)
    folder = output.write_run(result, tmp_path / "csv")
    result.scenario.output.requests_format = "parquet"
    output.write_run(result, tmp_path / "pq")
    f = pq.ParquetFile(tmp_path / "pq" / "requests.parquet")
    assert f.metadata.num_row_groups == 3 and f.metadata.num_rows == 120
    table = f.read()
    assert str(table.schema.field("slo_class").type) == "null"  # no SLO classes: all None, as pyarrow infers
    assert str(table.schema.field("tenant").type) == "string" and str(table.schema.field("ttft_s").type) == "double"
    rows = list(csv.reader((folder / "requests.csv").open()))
    assert rows[0] == table.column_names
    by_row = [[output._cell(v) for v in row] for row in zip(*(table.column(c).to_pylist() for c in rows[0]))]
    assert [[str(v) for v in row] for row in by_row] == rows[1:]


@pytest.mark.parametrize("case", ["faults", "rejected"])
def test_parquet_numbers_from_their_arrays_are_the_bytes_of_their_python_values(tmp_path, monkeypatch, case):
    # the numeric columns go to pyarrow as numpy slices with masks (`_arrow_column`): the file
    # must be byte for byte the one built from `column_values`' Python values, with the cells
    # that differ: replicas and pools after a crash's re-routes, tenants, and prompts too long
    # for the model (rejected: no first scheduled or first token time, a masked cell among values)
    pa = pytest.importorskip("pyarrow")
    from pathlib import Path

    import servesim.output as output

    monkeypatch.setattr(output, "ROW_CHUNK", 700)  # (several row groups; the first ones decide the types)
    if case == "faults":
        scenario = load_scenario(Path(__file__).parents[2] / "examples/cluster-faults.yaml",
                                 ["workload.trace.end_s=1500", "output.requests_format=parquet"])
    else:
        scenario = load_scenario(None, POISSON[:-1] + ["workload.num_requests=1500", "engine.max_model_len=1024",
                                                       "workload.attributes.tenants={a: 1, b: 1}"])
    result = simulate(scenario, keep_requests=False)
    output._write_parquet(result, tmp_path / "arrays.parquet")
    monkeypatch.setattr(output, "_arrow_column", lambda result, name, start, stop, pa, type=None:
                        pa.array(output.column_values(result, name, start, stop), type=type))
    output._write_parquet(result, tmp_path / "values.parquet")
    assert (tmp_path / "arrays.parquet").read_bytes() == (tmp_path / "values.parquet").read_bytes()
    table = pa.parquet.read_table(tmp_path / "arrays.parquet")
    if case == "faults":
        assert result.cluster["num_rerouted"] > 0 and table.column("replica").null_count == 0
    else:
        assert 0 < table.column("first_token_s").null_count < len(table)


def test_batch_sizes_logged_as_runs_expand_to_the_same_column():
    from servesim.metrics.recorder import BatchRuns
    runs = BatchRuns.of([3, 3, 2, 2, 2, 5])
    assert list(runs.sizes) == [3, 2, 5] and list(runs.lens) == [2, 3, 1]
    per_step, by_runs = Recorder(), Recorder()
    ends = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    growth = BlockGrowth(4, [1, 2, 9], [6, 6, 6], 16, [])
    per_step.log_decode_steps(0.0, ends, [3, 3, 2, 2, 2, 5], 1, growth)
    by_runs.log_decode_steps(0.0, ends, BatchRuns([3, 2, 5], [2, 3, 1]), 1, growth)
    by_runs.log_step(6.0, 7.0, 0, 4, 4, 0, 5)
    a, b = per_step.step_log(100), by_runs.step_log(100)
    assert a.num_running.tolist() == [3, 3, 2, 2, 2, 5] == b.num_running[:6].tolist()
    assert b.num_running.tolist()[6] == 4 and b.output_tokens.tolist() == [3, 3, 2, 2, 2, 5, 4]


def test_rows_turned_into_columns_in_pieces_give_the_same_run_folder(tmp_path, monkeypatch):
    """A chunk of rows made of several pieces (each turned into columns as it fills) spills and
    writes the same bytes as the chunk turned into columns at once: runs that moved between
    replicas (a crash), rerouted rows and the gaps streamed to the helper follow their rows."""
    import servesim.metrics.request_table as request_table
    from servesim.output import write_run

    monkeypatch.setattr(request_table, "FLUSH_ROWS", 16)
    turned = []
    columns = request_table.RequestTable._columns
    monkeypatch.setattr(request_table.RequestTable, "_columns",
                        lambda self: (turned.append(len(self._rows)), columns(self))[1])
    sets = ["replicas=2", "faults.crashes=[{replica: 1, at_s: 20, recovery_s: 5}]", "workload.trace.end_s=60"]
    folders, counts = [], []
    for piece in (4, 16):
        monkeypatch.setattr(request_table, "PIECE_ROWS", piece)
        turned.clear()
        result = simulate(load_scenario("examples/azure-conv.yaml", sets))
        summary = result.summary()
        summary.pop("wall_time_s")
        folders.append(write_run(result, tmp_path / str(piece), summary))
        counts.append(list(turned))
    n = len(result.table)
    assert n > 150 and sum(counts[0]) == sum(counts[1]) == n
    assert max(counts[0]) == 4 and len(counts[0]) >= n // 4  # pieces of 4 rows
    assert max(counts[1]) == 16 and len(counts[1]) < n // 8  # a chunk at once
    for name in ("summary.json", "requests.csv", "timeseries.csv"):
        assert (folders[0] / name).read_bytes() == (folders[1] / name).read_bytes(), name
