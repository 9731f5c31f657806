"""`servesim compare`: variant expansion, one table, the CSV and run folders."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from servesim.cli import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
from servesim.compare import expand_variants, split_values
from servesim.errors import InputError

SMALL = ["--set", "workload.num_requests=60"]


def test_split_values_lists_and_keeps_yaml_collections_whole():
    assert split_values("scheduler.name=vllm,sarathi, vtc") == ("scheduler.name", ["vllm", "sarathi", "vtc"])
    assert split_values("engine.max_num_seqs=64") == ("engine.max_num_seqs", ["64"])
    assert split_values("x.y=[1,2]") == ("x.y", ["[1,2]"])
    assert split_values("autoscaler.pool=[p, d],d") == ("autoscaler.pool", ["[p, d]", "d"])  # (whole before)
    assert split_values("a={x: 1, y: [2, 3]},'b,c', d") == ("a", ["{x: 1, y: [2, 3]}", "'b,c'", "d"])
    assert split_values("tenant=it's,b") == ("tenant", ["it's", "b"])
    assert split_values("x=a],b") == ("x", ["a]", "b"])
    with pytest.raises(InputError):
        split_values("no-equals-sign")


def test_cross_product_labels_and_shared_seed():
    variants = expand_variants([], ["scheduler.name=vllm,sarathi", "engine.max_num_seqs=8,64"], seed=7)
    assert [v.label for v in variants] == ["name=vllm max_num_seqs=8", "name=vllm max_num_seqs=64",
                                           "name=sarathi max_num_seqs=8", "name=sarathi max_num_seqs=64"]
    assert {v.scenario.seed for v in variants} == {7}
    assert variants[2].scenario.scheduler.name == "sarathi" and variants[2].scenario.engine.max_num_seqs == 8
    with pytest.raises(InputError):
        expand_variants([], ["scheduler.name=vllm,vllm"])


def test_compare_prints_one_table_and_writes_csv_and_runs(tmp_path):
    out = tmp_path / "cmp"
    res = CliRunner().invoke(app, ["compare", *SMALL, "--set", "scheduler.name=vllm,sarathi,vtc", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "sarathi" in res.stdout and "TTFT mean ms" in res.stdout  # on screen in ms, as `run` prints
    rows = list(csv.DictReader(open(out / "comparison.csv")))  # the CSV keeps seconds
    assert [r["variant"] for r in rows] == ["vllm", "sarathi", "vtc"]
    assert all(r["finished"] == "60" for r in rows)
    for name in ("vllm", "sarathi", "vtc"):
        summary = json.loads((out / name / "summary.json").read_text())
        assert summary["num_requests"] == 60  # the same workload for every variant
    assert float(rows[0]["TTFT mean s"]) != float(rows[1]["TTFT mean s"])


def test_comparing_autoscalers_shows_what_each_cost(tmp_path):
    # GPU-hours, cost, energy and cold starts per variant (columns only when some variant has them)
    out = tmp_path / "cmp"
    res = CliRunner().invoke(app, ["compare", str(EXAMPLES / "mooncake-pd.yaml"), "--set", "workload.trace.end_s=60",
                                   "--set", "autoscaler.pool=[prefill, decode]", "--set", "autoscaler.interval_s=10",
                                   "--set", "autoscaler.name=dynamo-planner,hpa", "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(out / "comparison.csv")))
    for r in rows:
        e = json.loads((out / r["variant"] / "summary.json").read_text())["elastic"]
        assert float(r["GPU-hours"]) == e["gpu_hours"] and float(r["cost $"]) == e["cost_usd"] > 0
        assert int(r["cold starts"]) == e["num_cold_starts"] and int(r["KV transfers"]) > 0
    assert rows[0]["GPU-hours"] != rows[1]["GPU-hours"]  # (the planner scales in from four prefill replicas)
    assert "migrations" not in rows[0]  # (no variant migrates)


def test_compare_several_scenario_files(tmp_path):
    for name, sched in (("a", "vllm"), ("b", "orca")):
        (tmp_path / f"{name}.yaml").write_text(f"scheduler: {sched}\nworkload: {{trace: azure-conv, num_requests: 30}}\n")
    res = CliRunner().invoke(app, ["compare", str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml"),
                                   "--out", str(tmp_path / "o"), "-q"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(tmp_path / "o" / "comparison.csv")))
    assert [(r["variant"], r["scheduler"]) for r in rows] == [("a", "vllm"), ("b", "orca")]


def test_bad_variant_is_one_line_error(tmp_path):
    res = CliRunner().invoke(app, ["compare", "--set", "scheduler.name=vllm,nope", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "unknown scheduler 'nope'" in res.output


def test_compare_report_writes_html(tmp_path):
    res = CliRunner().invoke(app, ["compare", *SMALL, "--set", "scheduler.name=vllm,sglang", "--out", str(tmp_path),
                                   "--report", "-q"])
    assert res.exit_code == 0, res.output
    html = (tmp_path / "comparison.html").read_text()
    assert "sglang" in html


def test_compare_table_prints_latencies_in_milliseconds(tmp_path):
    res = CliRunner().invoke(app, ["compare", *SMALL, "--set", "scheduler.name=vllm,orca", "--out", str(tmp_path)],
                             terminal_width=200)
    assert res.exit_code == 0, res.output
    rows = {r["variant"]: r for r in csv.DictReader(open(tmp_path / "comparison.csv"))}
    ttft_ms = float(rows["vllm"]["TTFT mean s"]) * 1e3
    line = next(ln for ln in res.stdout.splitlines() if "TTFT mean ms" in ln)
    assert f"{ttft_ms:.3g}" in line and " s " not in line.replace("TTFT mean ms", "")
