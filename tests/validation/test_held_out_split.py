"""The held-out split is by measurement: the copies of one measurement (twins, different ids) fall
on one side, the side of the first copy's position among the file's distinct measurements."""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from servesim.cli import app
from servesim.validation.silicon_file import _measurement, held_out_ids, read_rows

from tests.validation.silicon_rows import BASE, silicon_row

SILICON = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "perf" / "aiconfigurator_silicon" / "silicon_calibration.csv"


def test_without_twins_the_split_is_by_file_position():
    rows = [silicon_row(i, silicon_ttft_ms=str(20 + i)) for i in range(5)]
    assert held_out_ids(rows) == {"r1", "r3"}


def test_a_twin_falls_on_the_side_of_its_first_copy():
    # r0 and r1 are one measurement (same means under two ids); r2 and r3 are two others.
    rows = [silicon_row(0), silicon_row(1), silicon_row(2, silicon_ttft_ms="21"), silicon_row(3, silicon_ttft_ms="22")]
    assert held_out_ids(rows) == {"r2"}  # by file position it would be r1 (a copy of fitted r0) and r3
    # A near twin (TPOT in another digit) is another measurement.
    rows[1] = silicon_row(1, silicon_tpot_ms="10.000001")
    assert held_out_ids(rows) == {"r1", "r3"}


@pytest.mark.skipif(not SILICON.is_file(), reason=f"{SILICON} not found (CI places shared/ beside the clone)")
def test_in_the_measured_file_no_measurement_is_on_both_sides():
    rows = read_rows(SILICON)
    held = held_out_ids(rows)
    sides: dict[tuple, set[bool]] = defaultdict(set)
    for r in rows:
        sides[_measurement(r)].add(r.id in held)
    assert all(len(s) == 1 for s in sides.values())
    # By file position 183 aggregated measurements had a copy on each side; now none, and the split
    # stays near half.
    by_position = defaultdict(set)
    for i, r in enumerate(rows):
        if r.mode == "agg":
            by_position[_measurement(r)].add(i % 2)
    assert sum(len(s) == 2 for s in by_position.values()) == 183
    assert len(held) == 1666 and len(rows) == 3340


def test_validate_reports_the_held_out_rows(tmp_path: Path):
    path = tmp_path / "silicon.csv"
    rows = [{**BASE, "id": "a", "concurrency": "4", "batch_size": "4"},
            {**BASE, "id": "b", "concurrency": "4", "batch_size": "4"},  # a's twin: on a's side, not held out
            {**BASE, "id": "c", "concurrency": "4", "batch_size": "4", "silicon_ttft_ms": "40"}]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(BASE))
        w.writeheader()
        w.writerows(rows)
    res = CliRunner().invoke(app, ["validate", "--measured", str(path), "-o", str(tmp_path / "rows.csv")])
    assert res.exit_code == 0, res.output
    table = {r["id"]: float(r["ttft_error"]) for r in csv.DictReader((tmp_path / "rows.csv").open())}
    line = re.search(r"Held out \(odd measurements, each measurement's copies on one side\): (\d+) rows, "
                     r"TTFT ([\d.]+)% \(([-+][\d.]+)%\)", res.output)
    assert line is not None, res.output
    # Only c is held out (its TTFT error, not a's or b's: c's measured TTFT is twice theirs).
    assert int(line[1]) == 1 and table["c"] < -0.3 < table["a"]
    assert float(line[2]) == pytest.approx(abs(table["c"]) * 100, abs=0.06)
    assert float(line[3]) == pytest.approx(table["c"] * 100, abs=0.06)
