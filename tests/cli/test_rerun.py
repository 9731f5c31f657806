"""A run's own scenario.yaml runs again and reproduces the run byte for byte."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from servesim.cli import app

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = [None, *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "examples").glob("*.yaml"))]
SMALL = ["--set", "workload.num_requests=60"]  # every example, cut short: the rerun is what is tested


def _run(*args: str) -> None:
    res = CliRunner().invoke(app, ["run", "-q", *args])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: Path(s).stem if s else "default")
def test_resolved_scenario_runs_again_byte_identical(tmp_path, scenario, monkeypatch):
    monkeypatch.chdir(ROOT)  # examples name traces relative to the repository
    first, second = tmp_path / "first", tmp_path / "second"
    _run(*([scenario] if scenario else []), "--out", str(first), *SMALL)
    _run(str(first / "scenario.yaml"), "--out", str(second))
    for name in ("scenario.yaml", "requests.csv", "timeseries.csv"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    a, b = (json.loads((d / "summary.json").read_text()) for d in (first, second))
    a.pop("wall_time_s"), b.pop("wall_time_s")
    assert a == b and a["num_requests"] == 60


def test_resolved_scenario_writes_only_fields_that_apply(tmp_path):
    _run("--out", str(tmp_path / "r"), "--set", "workload.trace.end_s=30")
    text = (tmp_path / "r" / "scenario.yaml").read_text()
    assert "trace:" in text and "arrival:" not in text and "lengths:" not in text
    _run("--out", str(tmp_path / "g"), "--set", "workload.trace=null", "--set", "workload.num_requests=20",
         "--set", "workload.lengths.dataset=sharegpt")
    text = (tmp_path / "g" / "scenario.yaml").read_text()
    assert "process: poisson" in text and not re.search(r"^ +(cv|prompt_tokens):", text, re.M)
