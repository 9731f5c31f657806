"""`servesim validate`: table, per-row CSV, docs block; bad input is one line and exit 2."""

from __future__ import annotations

import csv
from pathlib import Path

from typer.testing import CliRunner

from servesim.cli import app
from tests.validation.test_silicon_mapping import BASE


def _file(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "silicon.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(BASE))
        w.writeheader()
        w.writerows(rows)
    return path


def test_validate_prints_groups_and_reasons(tmp_path: Path):
    rows = [{**BASE, "id": "a", "concurrency": "4", "batch_size": "4"}, {**BASE, "id": "b", "mode": "disagg"}]
    docs = tmp_path / "fidelity.md"
    docs.write_text("# x\n<!-- fidelity:begin -->\nold\n<!-- fidelity:end -->\nend\n")
    out = tmp_path / "rows.csv"
    res = CliRunner().invoke(app, ["validate", "--measured", str(_file(tmp_path, rows)), "-o", str(out), "--docs", str(docs)])
    assert res.exit_code == 0, res.output
    assert "Simulated rows: 1 of 2." in res.output
    assert "| vllm b200_sxm | 1 |" in res.output and "| **all** | 1 |" in res.output
    assert "| 1 | disaggregated: played separately by benchmarks/bench_silicon_disagg.py (docs/disaggregation.md) |" in res.output
    table = list(csv.DictReader(out.open()))
    assert [r["id"] for r in table] == ["a"] and float(table[0]["measured_ttft_ms"]) == 120.5
    assert all(len(table[0][k].split(".")[1]) == 6 for k in ("ttft_error", "tpot_error"))
    text = docs.read_text()
    assert "old" not in text and "| **all** | 1 |" in text and text.endswith("end\n")


def test_validate_bad_input_is_one_line(tmp_path: Path):
    res = CliRunner().invoke(app, ["validate", "--measured", str(tmp_path / "none.csv")])
    assert res.exit_code == 2
    assert "not found" in res.output and "Traceback" not in res.output
    bad = tmp_path / "bad.csv"
    bad.write_text("id\n1\n")
    res = CliRunner().invoke(app, ["validate", "--measured", str(bad)])
    assert res.exit_code == 2 and "missing column 'backend'" in res.output


def test_validate_reads_the_shipped_runs_from_any_folder(tmp_path: Path, monkeypatch):
    # the default file is the package's own (it was a path beside the repository: "not found" elsewhere)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["validate", "--sample", "1", "--jobs", "1"])
    assert res.exit_code == 0, res.output
    assert "Simulated rows: 1 of 1." in res.output and "| **all** | 1 |" in res.output


def test_the_shipped_runs_are_the_recorded_file():
    import gzip
    import hashlib

    from servesim.validation.silicon_file import DEFAULT_SILICON, read_rows

    digest = hashlib.sha256(gzip.decompress(DEFAULT_SILICON.read_bytes())).hexdigest()
    assert f"`{digest}`" in (DEFAULT_SILICON.parent / "README.md").read_text()  # its README's sha256
    assert len(read_rows(DEFAULT_SILICON)) == 3340


def test_a_gzip_file_that_is_not_one_is_one_line(tmp_path: Path):
    bad = tmp_path / "runs.csv.gz"
    bad.write_text("id,backend\n")
    res = CliRunner().invoke(app, ["validate", "--measured", str(bad)])
    assert res.exit_code == 2 and "cannot be read" in res.output and "Traceback" not in res.output


def test_validate_jobs_give_the_same_rows_in_file_order(tmp_path: Path):
    # rows are independent runs: worker processes change the wall time, not one byte of the results
    rows = [{**BASE, "id": "a", "concurrency": "4", "batch_size": "4"}, {**BASE, "id": "b", "mode": "disagg"},
            {**BASE, "id": "c", "concurrency": "2", "batch_size": "2"}]
    measured = _file(tmp_path, rows)
    outs = []
    for jobs in ("1", "2"):
        out = tmp_path / f"rows{jobs}.csv"
        res = CliRunner().invoke(app, ["validate", "--measured", str(measured), "-o", str(out), "--jobs", jobs])
        assert res.exit_code == 0, res.output
        assert "Simulated rows: 2 of 3." in res.output
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    assert [r["id"] for r in csv.DictReader(outs[0].decode().splitlines())] == ["a", "c"]
    res = CliRunner().invoke(app, ["validate", "--measured", str(measured), "--jobs", "0"])
    assert res.exit_code == 2 and "--jobs" in res.output


def test_validate_only_and_ids_select_rows(tmp_path: Path):
    rows = [{**BASE, "id": "a", "concurrency": "4", "batch_size": "4"},
            {**BASE, "id": "b", "concurrency": "2", "batch_size": "2", "backend": "sglang"},
            {**BASE, "id": "c", "concurrency": "2", "batch_size": "2"}]
    measured = _file(tmp_path, rows)
    out = tmp_path / "rows.csv"
    res = CliRunner().invoke(app, ["validate", "--measured", str(measured), "--only", "sglang:b200_sxm", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "Simulated rows: 1 of 1." in res.output and "| sglang b200_sxm | 1 |" in res.output
    # a --output file selects its own rows again
    ids = tmp_path / "ids.txt"
    ids.write_text("c\na\n")
    res = CliRunner().invoke(app, ["validate", "--measured", str(measured), "--ids", str(ids), "--only", "vllm"])
    assert res.exit_code == 0 and "Simulated rows: 2 of 2." in res.output
    res = CliRunner().invoke(app, ["validate", "--measured", str(measured), "--ids", str(out)])
    assert res.exit_code == 0 and "| sglang b200_sxm | 1 |" in res.output and "Simulated rows: 1 of 1." in res.output
    res = CliRunner().invoke(app, ["validate", "--measured", str(measured), "--only", "trtllm"])
    assert res.exit_code == 2 and "allowed: sglang, sglang:b200_sxm, vllm, vllm:b200_sxm" in res.output
    ids.write_text("zz\n")
    res = CliRunner().invoke(app, ["validate", "--measured", str(measured), "--ids", str(ids)])
    assert res.exit_code == 2 and "'zz'" in res.output and "Traceback" not in res.output
