"""requests.csv and timeseries.csv, made a column at a time, are the bytes `csv.writer` writes
from the rows' Python values (floats as repr, None and NaN empty, strings quoted as it quotes)."""

import csv
import io

import numpy as np

from servesim import load_scenario, simulate
from servesim.output import _cell, _csv_texts, request_columns, request_rows, write_run
from servesim.metrics.timeseries import COLUMNS as TS_COLUMNS

ODD = ["a,b", 'say "hi"', "two\nlines", "", "None", "nan", " spaced ", "plain"]


def _writer_bytes(header, rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def test_cells_of_odd_strings_numbers_and_none_are_the_writers():
    strings = ODD + [None, "a,b"]
    numbers = [1, None, 0.1, float("nan"), float("inf"), -0.0, 1e-300, 2**70, 3.0]
    got = [",".join(row) for row in zip(_csv_texts(strings, False), _csv_texts(numbers + [0], True))]
    want = _writer_bytes(["x", "y"], [[s, _cell(n)] for s, n in zip(strings, numbers + [0])]).split("\r\n")[1:-1]
    assert got == want and '"a,b"' in got[0] and got[1].startswith('"say ""hi"""') and got[4] == "None,inf" and got[5] == "nan,-0.0"


def test_run_folder_csvs_are_the_writers_bytes(tmp_path):
    tenants = "{" + ", ".join(f"{t!r}: 1" for t in ODD if t.strip() and "\n" not in t) + "}"
    sets = ["workload.trace=null", "workload.num_requests=400", "workload.arrival.rate_per_s=8", "replicas=2",
            "router.name=least-requests", f"workload.attributes.tenants={tenants}", "max_sim_time_s=40",
            "faults.crashes=[{replica: 1, at_s: 10, recovery_s: 5}]"]
    result = simulate(load_scenario(None, sets), keep_requests=False)
    folder = write_run(result, tmp_path / "run")
    rows = [[_cell(v) for v in row] for row in request_rows(result)]
    assert (folder / "requests.csv").read_bytes().decode() == _writer_bytes(request_columns(result), rows)
    text = (folder / "requests.csv").read_text()
    assert '"a,b"' in text and ",," in text and "dropped" in text  # quoted tenants, empty cells, a stopped run
    blocks = list(result.timeseries_blocks())
    names = list(TS_COLUMNS) + [c for c in blocks[0] if c not in TS_COLUMNS]
    ts_rows = [[_cell(float(x)) for x in row] for b in blocks for row in zip(*(np.asarray(b[c]) for c in names))]
    assert (folder / "timeseries.csv").read_bytes().decode() == _writer_bytes(names, ts_rows)
