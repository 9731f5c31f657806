"""The report on a folder written by the real `servesim run --report` (the contract, end to end)."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest

from servesim.report.load import REQUEST_NUMBER_COLUMNS, REQUEST_TEXT_COLUMNS, TIMESERIES_COLUMNS, load_run

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "azure-conv.yaml"


def test_servesim_run_report(tmp_path: Path) -> None:
    pytest.importorskip("servesim.simulation", reason="the simulation core is not available")
    if not EXAMPLE.is_file():
        pytest.skip(f"{EXAMPLE} is missing")
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", "from servesim.cli import main; main()", "run", str(EXAMPLE),
           "--set", "workload.num_requests=300", "--out", str(out), "--report", "-q"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    run = load_run(out)
    assert run.notes == []
    assert set(REQUEST_NUMBER_COLUMNS + REQUEST_TEXT_COLUMNS) <= set(run.requests)
    assert set(TIMESERIES_COLUMNS) <= set(run.timeseries)
    assert run.num_request_rows == run.summary["num_requests"] == 300
    page = (out / "report.html").read_text(encoding="utf-8")
    assert re.findall(r'data-plot="([^"]+)"', page)[:4] == ["ttft_s", "tpot_s", "e2e_s", "timeseries"]
    assert "TTFT SLO 2000 ms" in page


def test_cluster_run_report_has_the_per_replica_load(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", "from servesim.cli import main; main()", "run", str(EXAMPLE),
           "--set", "workload.num_requests=300", "--set", "replicas=3", "--set", "router.name=least-requests",
           "--out", str(out), "--report", "-q"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    run = load_run(out)
    assert run.notes == []
    with open(out / "requests.csv") as f:
        assert {row["replica"] for row in csv.DictReader(f)} == {"0", "1", "2"}
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "replicas" in re.findall(r'data-plot="([^"]+)"', page)
    assert "Load per replica" in page
