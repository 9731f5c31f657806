"""requests.csv and timeseries.csv, made a column at a time, are the bytes `csv.writer` writes
from the rows' Python values (floats as repr, None and NaN empty, strings quoted as it quotes)."""

import csv
import io

import numpy as np

from servesim import load_scenario, simulate
from servesim.csv_cells import fast_floats, number_texts
from servesim.output import _cell, _csv_texts, request_columns, request_rows, write_run
from servesim.metrics.request_table import NONE_ID as NONE
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
    numbers = [1.0, None, 0.1, float("nan"), float("inf"), -0.0, 1e-300, 2.0**70, 3.0, 0.0]
    missing = np.array([n is None for n in numbers])
    cells = number_texts(np.array([np.nan if n is None else n for n in numbers]), missing)
    got = [",".join(row) for row in zip(_csv_texts(strings), cells)]
    want = _writer_bytes(["x", "y"], [[s, _cell(n)] for s, n in zip(strings, numbers)]).split("\r\n")[1:-1]
    assert got == want and '"a,b"' in got[0] and got[1].startswith('"say ""hi"""') and got[4] == "None,inf" and got[5] == "nan,-0.0"


def test_run_folder_csvs_are_the_writers_bytes(tmp_path):
    tenants = "{" + ", ".join(f"{t!r}: 1" for t in ODD if t.strip() and "\n" not in t) + "}"
    sets = ["workload.trace=null", "workload.num_requests=400", "workload.arrival.rate_per_s=8", "replicas=2",
            "router.name=least-requests", f"workload.attributes.tenants={tenants}", "max_sim_time_s=40",
            "faults.crashes=[{replica: 1, at_s: 10, recovery_s: 5}]"]
    result = simulate(load_scenario(None, sets), keep_requests=False)
    folder = write_run(result, tmp_path / "run")
    assert fast_floats()  # (the floats were formatted by orjson: the test extra installs it)
    rows = [[_cell(v) for v in row] for row in request_rows(result)]
    assert (folder / "requests.csv").read_bytes().decode() == _writer_bytes(request_columns(result), rows)
    text = (folder / "requests.csv").read_text()
    assert '"a,b"' in text and ",," in text and "dropped" in text  # quoted tenants, empty cells, a stopped run
    blocks = list(result.timeseries_blocks())
    names = list(TS_COLUMNS) + [c for c in blocks[0] if c not in TS_COLUMNS]
    ts_rows = [[_cell(float(x)) for x in row] for b in blocks for row in zip(*(np.asarray(b[c]) for c in names))]
    assert (folder / "timeseries.csv").read_bytes().decode() == _writer_bytes(names, ts_rows)


class _CountingOrjson:
    """orjson, counting the calls that format cells (so a test knows the fast path ran)."""

    def __init__(self, real) -> None:
        self.real, self.calls, self.OPT_SERIALIZE_NUMPY = real, 0, real.OPT_SERIALIZE_NUMPY

    def dumps(self, *args, **kwargs):
        self.calls += 1
        return self.real.dumps(*args, **kwargs)


def _awkward_floats() -> np.ndarray:
    rng = np.random.default_rng(7)
    edges = [0.0, -0.0, 1e-3, np.nextafter(1e-3, 0), 1e-4, 9.9e-5, 1e15, np.nextafter(1e15, 0), 1e16, 1e17, 5e-324,
             1.7976931348623157e308, float("nan"), float("inf"), -float("inf"), 0.1, 1 / 3, 2.0, -7.25, 123.0]
    random_bits = rng.integers(0, 2**64, 20000, dtype=np.uint64).view(np.float64)
    return np.concatenate([edges, random_bits, rng.random(20000) * 1e5, -rng.random(2000) * 1e-2,
                           np.exp(rng.uniform(-40, 40, 20000))])


def test_float_cells_from_orjson_are_reprs_and_ran(monkeypatch):
    from servesim import csv_cells

    values = _awkward_floats()
    missing = np.zeros(len(values), dtype=bool)
    missing[::97] = True
    want = [_cell(None if m else x) for x, m in zip(values.tolist(), missing.tolist())]
    assert csv_cells.fast_floats()  # orjson is in the test extra and agrees with repr on the probe
    counting = _CountingOrjson(csv_cells.orjson)  # (after the probe, which this process may not have run yet)
    monkeypatch.setattr(csv_cells, "orjson", counting)
    got = csv_cells.number_texts(values, missing)
    assert counting.calls == 1 and got == want
    assert got[12] == "" and got[13] == "inf" and got[8] == "1e+16" and got[5] == "9.9e-05" and got[1] == "-0.0"
    monkeypatch.setattr(csv_cells, "_checked", [False])  # the value-by-value path gives the same cells
    assert csv_cells.number_texts(values, missing) == want and counting.calls == 1


def test_int_cells_by_table_and_by_value():
    from servesim.csv_cells import number_texts

    rng = np.random.default_rng(3)
    narrow = rng.integers(-5, 300, 5000)  # a table of 305 strings
    wide = rng.integers(-2**62, 2**62, 5000)  # str of each value
    for values in (narrow, wide, np.array([7]), np.array([], dtype=np.int64)):
        missing = (values % 7 == 0)
        assert number_texts(values) == [str(v) for v in values.tolist()]
        assert number_texts(values, missing) == ["" if m else str(v) for v, m in zip(values.tolist(), missing)]
    assert number_texts(np.array([NONE, NONE]), np.array([True, True])) == ["", ""]
