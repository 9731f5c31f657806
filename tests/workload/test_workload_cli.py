import json

import pytest
from typer.testing import CliRunner

from servesim.cli import app

runner = CliRunner()


def test_stats_json_keys():
    res = runner.invoke(app, ["trace", "stats", "azure-conv", "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    assert s["num_requests"] == 19366
    for key in ("duration_s", "mean_rate_per_s", "interarrival_cv"):
        assert key in s
    for key in ("input_len", "output_len"):
        assert set(s[key]) >= {"p50", "p90", "p99", "max"}
    moon = json.loads(runner.invoke(app, ["trace", "stats", "mooncake-conversation", "--json"]).stdout)
    assert round(moon["prefix_reuse_ratio"], 3) == 0.366


def test_stats_text_and_list():
    res = runner.invoke(app, ["trace", "stats", "azure-code"])
    assert res.exit_code == 0 and "8,819 requests" in res.stdout and "CV 13.15" in res.stdout
    listing = runner.invoke(app, ["trace", "list"]).stdout
    for name in ("azure-conv", "azure-code", "mooncake-conversation", "sharegpt-sarathi-8k", "sharegpt", "arxiv",
                 "servegen-deepseek-r1"):
        assert name in listing


def test_sharegpt_is_the_sarathi_table_under_its_old_name():
    old = json.loads(runner.invoke(app, ["trace", "stats", "sharegpt", "--json"]).stdout)
    named = json.loads(runner.invoke(app, ["trace", "stats", "sharegpt-sarathi-8k", "--json"]).stdout)
    assert old == named and old["num_requests"] == 30731


def test_bad_input_is_one_line_exit_2(tmp_path):
    res = runner.invoke(app, ["trace", "stats", "no-such"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    bad = tmp_path / "b.csv"
    bad.write_text("arrival_s,prompt_len,output_len\n0,1,x\n")
    res = runner.invoke(app, ["trace", "stats", str(bad)])
    assert res.exit_code == 2 and "b.csv line 2, column output_len" in res.output
    res = runner.invoke(app, ["trace", "stats", str(bad), "--skip-bad-rows", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["skipped_rows"] == 1


def test_convert_slices_and_rescales(tmp_path):
    out = tmp_path / "slice.csv"
    res = runner.invoke(app, ["trace", "convert", "azure-conv", str(out), "--start-s", "600", "--end-s", "1200",
                              "--speedup", "2"])
    assert res.exit_code == 0, res.output
    s = json.loads(runner.invoke(app, ["trace", "stats", str(out), "--json"]).stdout)
    assert s["duration_s"] <= 300 and s["mean_rate_per_s"] > 2 * 4.5
    assert runner.invoke(app, ["trace", "convert", "azure-conv", str(out), "--speedup", "0"]).exit_code == 2


def test_generate_writes_the_scenario_workload(tmp_path):
    scn = tmp_path / "s.yaml"
    scn.write_text("workload:\n  arrival: {process: gamma, rate_per_s: 4, cv: 2}\n  lengths: {dataset: arxiv}\n"
                   "  num_requests: 250\n")
    out = tmp_path / "g.jsonl"
    res = runner.invoke(app, ["trace", "generate", str(scn), str(out)])
    assert res.exit_code == 0, res.output
    assert len(out.read_text().splitlines()) == 250


def _first_of_each_unit(requests_csv, key: str) -> list[tuple[float, int, int]]:
    import csv

    first: dict[str, tuple[float, int, int]] = {}
    for r in csv.DictReader(open(requests_csv)):  # rows in id order: a unit's first request comes first
        first.setdefault(r[key], (float(r["arrival_s"]), int(r["prompt_len"]), int(r["output_len"])))
    return [first[k] for k in sorted(first, key=int)]


@pytest.mark.parametrize(("workload", "key"), [
    (["workload.arrival.rate_per_s=2", "workload.sessions.turns=[2, 6]"], "session_id"),
    (["workload.arrival.rate_per_s=1", "workload.programs.calls=[{}, {parents: [0]}, {parents: [0, 1]}]",
      "workload.sessions=null"], "program_id"),
])
def test_generate_writes_the_starts_that_run_simulates(tmp_path, workload, key):
    import csv

    sets = [x for item in ["workload.trace=null", "workload.lengths.dataset=sharegpt", "workload.num_requests=300",
                           *workload] for x in ("--set", item)]
    res = runner.invoke(app, ["trace", "generate", "src/servesim/scenarios/default.yaml", str(tmp_path / "g.csv"), *sets])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["run", "-q", "--out", str(tmp_path / "run"), *sets])
    assert res.exit_code == 0, res.output
    started = _first_of_each_unit(tmp_path / "run" / "requests.csv", key)
    generated = [(float(r["arrival_s"]), int(r["prompt_len"]), int(r["output_len"]))
                 for r in csv.DictReader(open(tmp_path / "g.csv"))]
    assert 40 < len(started) < len(generated) == 300  # num_requests counts the follow-ups too
    assert generated[:len(started)] == started
