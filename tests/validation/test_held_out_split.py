"""The held-out split is by measurement: the copies of one measurement (twins, different ids) fall
on the side of the first copy's file position; rows without twins keep their own position's side."""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from servesim.cli import app
from servesim.validation.silicon_file import _measurement, held_out_ids, read_rows

from tests.validation.silicon_rows import BASE, SILICON, silicon_row


def test_without_twins_the_split_is_by_file_position():
    rows = [silicon_row(i, silicon_ttft_ms=str(20 + i)) for i in range(5)]
    assert held_out_ids(rows) == {"r1", "r3"}


def test_a_twin_falls_on_the_side_of_its_first_copy():
    # r0, r1 and r4 are one measurement (the same means under three ids); r2 and r3 are two others.
    rows = [silicon_row(0), silicon_row(1), silicon_row(2, silicon_ttft_ms="21"), silicon_row(3, silicon_ttft_ms="22"),
            silicon_row(4)]
    assert held_out_ids(rows) == {"r3"}  # by file position r1, a copy of the even r0, would be held out too
    # First at an odd position, every copy is held out, wherever it stands.
    assert held_out_ids([rows[2], *rows[:2], rows[3], rows[4]]) == {"r0", "r1", "r3", "r4"}
    # A near twin (TPOT in another digit) is another measurement.
    rows[1] = silicon_row(1, silicon_tpot_ms="10.000001")
    assert held_out_ids(rows) == {"r1", "r3"}


def test_in_the_measured_file_no_measurement_is_on_both_sides():
    rows = read_rows(SILICON)
    held = held_out_ids(rows)
    sides: dict[tuple, set[bool]] = defaultdict(set)
    for r in rows:
        sides[_measurement(r)].add(r.id in held)
    assert all(len(s) == 1 for s in sides.values())
    # By file position 183 aggregated measurements had a copy on each side; now none. Only copies
    # move: every row without a twin keeps its position's side.
    by_position: dict[tuple, set[int]] = defaultdict(set)
    for i, r in enumerate(rows):
        if r.mode == "agg":
            by_position[_measurement(r)].add(i % 2)
    assert sum(len(s) == 2 for s in by_position.values()) == 183
    copies = {k for k, n in _counts(rows).items() if n > 1}
    assert all((r.id in held) == (i % 2 == 1) for i, r in enumerate(rows) if _measurement(r) not in copies)


def _counts(rows) -> dict[tuple, int]:
    n: dict[tuple, int] = defaultdict(int)
    for r in rows:
        n[_measurement(r)] += 1
    return n


def test_validate_reports_the_held_out_rows(tmp_path: Path):
    path = tmp_path / "silicon.csv"
    rows = [{**BASE, "id": "a", "concurrency": "4", "batch_size": "4"},
            {**BASE, "id": "b", "concurrency": "4", "batch_size": "4"},  # a's twin: on a's side, not held out
            {**BASE, "id": "c", "concurrency": "4", "batch_size": "4", "silicon_ttft_ms": "40"},
            {**BASE, "id": "d", "concurrency": "4", "batch_size": "4", "silicon_ttft_ms": "80"}]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(BASE))
        w.writeheader()
        w.writerows(rows)
    res = CliRunner().invoke(app, ["validate", "--measured", str(path), "-o", str(tmp_path / "rows.csv")])
    assert res.exit_code == 0, res.output
    table = {r["id"]: float(r["ttft_error"]) for r in csv.DictReader((tmp_path / "rows.csv").open())}
    line = re.search(r"Held out \(odd file positions, a measurement's copies on the side of its first\): (\d+) rows, "
                     r"TTFT ([\d.]+)% \(([-+][\d.]+)%\)", res.output)
    assert line is not None, res.output
    # Only d is held out (its TTFT error, not b's: d's measured TTFT is four times b's).
    assert int(line[1]) == 1 and table["d"] < -0.5 < table["b"]
    assert float(line[2]) == pytest.approx(abs(table["d"]) * 100, abs=0.06)
    assert float(line[3]) == pytest.approx(table["d"] * 100, abs=0.06)
