"""Reading run folders: the contract's files become plain arrays; bad folders are InputErrors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from report_synthetic_run import write_run
from servesim.errors import InputError
from servesim.report import load
from servesim.report.load import load_run


def test_reads_every_file(run_a: Path) -> None:
    run = load_run(run_a)
    assert run.scenario["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert run.summary["num_requests"] == 400
    assert run.num_request_rows == 400
    assert set(run.requests["tenant"]) == {"acme", "globex"}
    assert run.requests["ttft_s"].dtype == float
    # Empty cells are missing values: rejected requests have no TTFT.
    rejected = run.requests["state"] == "rejected"
    assert rejected.any() and np.isnan(run.requests["ttft_s"][rejected]).all()
    assert len(run.timeseries["time_s"]) > 10
    assert run.notes == []


def test_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_run(tmp_path / "nope")


def test_folder_without_summary(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        load_run(tmp_path)
    assert str(info.value) == f"OUT_DIR '{tmp_path}' has no summary.json; is it a servesim run folder?"


def test_bad_summary_json(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(InputError, match="summary.json' is not valid JSON"):
        load_run(tmp_path)


def test_bad_number_names_file_line_and_column(tmp_path: Path) -> None:
    write_run(tmp_path, num_requests=20)
    lines = (tmp_path / "requests.csv").read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[3].split(",")
    cells[header.index("ttft_s")] = "fast"
    lines[3] = ",".join(cells)
    (tmp_path / "requests.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"requests.csv' line 4: column ttft_s holds 'fast'"):
        load_run(tmp_path)


def test_missing_optional_files_become_notes(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text(json.dumps({"num_requests": 0}))
    run = load_run(tmp_path)
    assert run.requests == {} and run.timeseries == {} and run.scenario == {}
    assert len(run.notes) == 3


def test_unknown_and_missing_columns_are_tolerated(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text("{}")
    (tmp_path / "requests.csv").write_text("id,ttft_s,brand_new\n0,0.1,x\n1,,y\n")
    run = load_run(tmp_path)
    assert set(run.requests) == {"ttft_s"}
    assert run.requests["ttft_s"][0] == 0.1 and math.isnan(run.requests["ttft_s"][1])


def test_chunked_reading_gives_the_whole_files_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Read 3 rows at a time: the same arrays as in one chunk, blanks NaN, a bad cell's line right."""
    write_run(tmp_path, num_requests=20)
    whole = load_run(tmp_path)
    monkeypatch.setattr(load, "_CHUNK_ROWS", 3)
    chunked = load_run(tmp_path)
    for got, want in ((chunked.requests, whole.requests), (chunked.timeseries, whole.timeseries)):
        assert list(got) == list(want) and len(want["arrival_s" if "arrival_s" in want else "time_s"]) > 3
        for name in want:
            assert got[name].dtype == want[name].dtype
            assert np.array_equal(got[name], want[name], equal_nan=want[name].dtype != object), name
    states = chunked.requests["state"]
    assert len({id(s) for s in states}) == len(set(states))  # one string object per distinct value

    lines = (tmp_path / "requests.csv").read_text().splitlines()
    column = lines[0].split(",").index("ttft_s")
    for row, cell in ((8, ""), (11, "fast")):  # rows in the third and fourth chunks
        cells = lines[row].split(",")
        cells[column] = cell
        lines[row] = ",".join(cells)
    (tmp_path / "requests.csv").write_text("\n".join(lines[:11]) + "\n")
    assert math.isfinite(whole.requests["ttft_s"][7])
    assert math.isnan(load_run(tmp_path).requests["ttft_s"][7])
    (tmp_path / "requests.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"requests.csv' line 12: column ttft_s holds 'fast'"):
        load_run(tmp_path)


def test_parquet_requests_give_the_csvs_columns(tmp_path: Path) -> None:
    """requests.parquet (only the wanted columns read): the same arrays as requests.csv, nulls NaN."""
    pa_csv = pytest.importorskip("pyarrow.csv")
    pq = pytest.importorskip("pyarrow.parquet")
    write_run(tmp_path, num_requests=40)
    from_csv = load_run(tmp_path).requests
    pq.write_table(pa_csv.read_csv(tmp_path / "requests.csv"), tmp_path / "requests.parquet")
    (tmp_path / "requests.csv").unlink()
    from_parquet = load_run(tmp_path).requests
    assert list(from_parquet) == list(from_csv)
    assert np.isnan(from_csv["ttft_s"]).any()  # blanks present, read as nulls by pyarrow
    for name, want in from_csv.items():
        assert np.array_equal(from_parquet[name], want, equal_nan=want.dtype != object), name
