"""Writing a spilled run's folder in bulk: CSV lines made by one join per chunk, TTFT / TPOT / E2E
read once a chunk, and the spilled columns mapped with mmap (perreq5). The bytes are csv.writer's
(test_csv_cells.py); these tests check the lines' shapes and that the bulk paths ran."""

import io

import numpy as np
import pytest

import servesim.output as output
from servesim import load_scenario, simulate
from servesim.metrics.request_table import RequestTable
from servesim.metrics.row_spill import MappedColumns
from servesim.output import _write_lines, request_columns, write_run


@pytest.mark.parametrize("columns", [
    [["a"]],  # one cell
    [["1", "2", "3"]],  # one column
    [["x"], ["y"], ["z"]],  # one row
    [['"a,b"', "", "3.5"], ["", "7", ""]],  # quoted and empty cells
])
def test_lines_are_the_rows_joined_for_any_shape(columns):
    f = io.StringIO()
    _write_lines(f, columns)  # (cells already quoted as csv.writer quotes them: _csv_texts)
    want = "".join(",".join(row) + "\r\n" for row in zip(*columns))
    assert f.getvalue() == want and f.getvalue().count("\r\n") == len(columns[0])


def test_no_rows_write_nothing():
    f = io.StringIO()
    _write_lines(f, [[], []])
    _write_lines(f, [])
    assert f.getvalue() == ""


def _spilled_run():
    sets = ["workload.trace=null", "workload.num_requests=300", "workload.arrival.rate_per_s=6", "replicas=2",
            "router.name=least-requests", "faults.crashes=[{replica: 1, at_s: 10, recovery_s: 5}]"]
    result = simulate(load_scenario(None, sets), keep_requests=False)
    assert isinstance(result.table.cols, MappedColumns)  # (the rows were spilled: the mapped path runs)
    return result


def test_derived_columns_are_read_once_a_chunk(tmp_path, monkeypatch):
    result = _spilled_run()
    summary = result.summary()
    calls = []
    real = RequestTable.request_columns
    monkeypatch.setattr(RequestTable, "request_columns", lambda self, rows=slice(None): (calls.append(rows),
                                                                                        real(self, rows))[1])
    monkeypatch.setattr(output, "CSV_ROWS", 64)
    folder = write_run(result, tmp_path / "small", summary)
    n = len(result.table)
    assert calls == [slice(s, s + 64) for s in range(0, n, 64)]  # one read a chunk of 64 rows, not three
    monkeypatch.undo()
    same = write_run(result, tmp_path / "whole", summary)
    text = (folder / "requests.csv").read_bytes()
    assert text == (same / "requests.csv").read_bytes()  # (chunks of 64 rows and of CSV_ROWS: one file)
    assert text.count(b"\r\n") == n + 1 and text.startswith(",".join(request_columns(result)).encode())


def test_mapped_columns_are_the_files_values_read_only_without_memmap(monkeypatch):
    result = _spilled_run()
    cols = result.table.cols

    def no_memmap(*args, **kwargs):
        raise AssertionError("np.memmap called")

    monkeypatch.setattr(np, "memmap", no_memmap)
    for name in ("id", "arrival_s", "finish_s", "state", "num_preemptions"):
        values = cols[name]
        want = np.fromfile(cols.folder / f"col-{name}.bin", dtype=cols.dtypes[name])
        assert len(values) == len(result.table) == len(want) and values.tobytes() == want.tobytes()
        assert not values.flags.writeable
    starts = cols.run("run_starts")
    assert len(starts) == cols.num_runs > 0 and not starts.flags.writeable
