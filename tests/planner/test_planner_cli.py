"""`servesim plan`: the files it writes, and one line with exit code 2 for bad input."""

from __future__ import annotations

import csv

import pytest
import yaml
from typer.testing import CliRunner

from servesim.cli import app
from tests.planner.helpers import small_plan

runner = CliRunner()


def write(tmp_path, plan) -> str:
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan) if isinstance(plan, dict) else plan)
    return str(path)


def test_plan_writes_table_report_best_scenario_and_deploy_sketch(tmp_path):
    out = tmp_path / "out"
    res = runner.invoke(app, ["plan", write(tmp_path, small_plan()), "--out", str(out), "--jobs", "1"])
    assert res.exit_code == 0, res.output
    assert "best: " in res.output and "static pick (no queueing, TTFT x 1.8)" in res.output
    with open(out / "plan.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 6 and table[0]["rank"] == "1" and table[0]["status"] == "ok"
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["gpu"] == table[0]["gpu"] and best["engine"]["max_num_seqs"] == int(table[0]["max_num_seqs"])
    run = runner.invoke(app, ["run", str(out / "best.yaml"), "--out", str(tmp_path / "run"), "--quiet"])
    assert run.exit_code == 0, run.output  # the winner runs as is
    deploy = (out / "deploy.md").read_text()
    assert f"--max-num-seqs {table[0]['max_num_seqs']}" in deploy and "--max-running-requests" in deploy
    html = (out / "report.html").read_text()
    assert 'data-plot="pareto-cost"' in html and table[0]["candidate"] in html
    try:
        import pyarrow.parquet as pq
    except ImportError:
        assert not (out / "plan.parquet").exists()
    else:
        assert pq.read_table(out / "plan.parquet").num_rows == 6
    again = runner.invoke(app, ["plan", write(tmp_path, small_plan()), "--out", str(out), "--jobs", "1"])
    assert again.exit_code == 0 and "0 simulations (" in again.output  # everything from the cache


@pytest.mark.parametrize("plan, message", [
    (small_plan(space={"gpu": []}), "error: the search space is empty"),
    (small_plan(slo={"ttft_s": 0.001, "tpot_s": 0.05}), "error: no candidate can meet the SLO even unloaded"),
    (small_plan(space={"gpu": [{"name": "l40s", "price_usd_h": 0}]}), "error: GPU l40s has no price"),
    (small_plan(space={"mode": ["disaggregated"]}), "error: space.mode: disaggregated is not yet supported"),
    (small_plan(space={"gpu": ["h200-nvl"]}), "error: unknown gpu 'h200-nvl'"),
    (small_plan(search={"objective": "latency"}), "error: plan: search.objective"),
    ("space: [1, 2", "error: plan: malformed YAML"),
    (small_plan(mix={"rate_per_s": 5, "buckets": [{"name": "a", "share": 1, "prompt_tokens": [200, 100]}]}),
     "error: plan: mix.buckets.0: prompt_tokens must be an integer >= 1 or [low, high] with 1 <= low <= high"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, plan, message):
    path = write(tmp_path, plan).replace(str(tmp_path / "plan.yaml"), "plan.yaml")
    res = runner.invoke(app, ["plan", str(tmp_path / "plan.yaml"), "--out", str(tmp_path / "out"), "-j", "1"])
    assert res.exit_code == 2, res.output
    assert res.output.strip().startswith(message.replace("plan:", f"{tmp_path / 'plan.yaml'}:")), res.output
    assert len(res.output.strip().splitlines()) == 1 and path
    assert not (tmp_path / "out").exists()  # (not even a cache of the probes made before the error)


def test_no_candidate_meeting_the_traffic_names_the_closest(tmp_path):
    plan = small_plan(traffic={"rate_per_s": 500.0}, space={"gpu": ["l40s", "a100-80gb"], "replicas": [1]})
    res = runner.invoke(app, ["plan", write(tmp_path, plan), "--out", str(tmp_path / "out"), "-j", "1"])
    assert res.exit_code == 0, res.output
    assert "no candidate meets the SLO at the traffic; closest: a100-80gb tp1 x1 vllm" in res.output.replace("\n", " ")
    assert not (tmp_path / "out" / "best.yaml").exists()
