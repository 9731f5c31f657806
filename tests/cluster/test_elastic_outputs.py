"""What an elastic run writes: scale_events.csv (one row per decision), the extra
time-series columns, the `elastic` summary section and the report panel."""

from __future__ import annotations

import csv
import json

from servesim import load_scenario, simulate
from servesim.output import write_run
from servesim.report import write_run_report

SETS = ["workload.trace=null", "workload.arrival.process=poisson", "workload.arrival.rate_per_s=40",
        "workload.num_requests=200", "workload.lengths.dataset=sharegpt", "engine.gpu_memory_utilization=0.3",
        "autoscaler.name=kpa", "autoscaler.container_concurrency_target_default=16", "autoscaler.max_replicas=3"]


def test_run_folder_and_report_of_an_elastic_run(tmp_path):
    result = simulate(load_scenario(None, SETS))
    out = write_run(result, tmp_path / "run")
    with open(out / "scale_events.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(result.scale_events) > 0
    assert {r["action"] for r in rows} <= {"up", "down", "hold"} and any(r["action"] == "up" for r in rows)
    assert [float(r["time_s"]) for r in rows] == [2.0 * (i + 1) for i in range(len(rows))]
    assert {r["pool"] for r in rows} == {"default"}  # (the pool decided on: one column for runs that scale several)
    with open(out / "timeseries.csv") as f:
        header = next(csv.reader(f))
    assert header[-3:] == ["num_replicas", "power_w", "cost_usd"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["elastic"]["autoscaler"] == "kpa" and summary["elastic"]["num_cold_starts"] >= 1
    html = write_run_report(out).read_text()
    assert "Elastic cluster: replicas, power and cost" in html and "gpu_hours" in html


def test_a_fixed_run_writes_no_elastic_output(tmp_path):
    result = simulate(load_scenario(None, SETS[:6]))
    out = write_run(result, tmp_path / "run")
    assert not (out / "scale_events.csv").exists()
    assert "elastic" not in json.loads((out / "summary.json").read_text())
    with open(out / "timeseries.csv") as f:
        assert "num_replicas" not in next(csv.reader(f))
    assert "Elastic cluster" not in write_run_report(out).read_text()


def test_the_report_draws_each_scaled_pool_beside_the_total(tmp_path):
    # (from scale_events.csv: a pool's replicas ready or starting at each of its decisions)
    sets = ["workload.trace=null", "workload.arrival.process=poisson", "workload.arrival.rate_per_s=8",
            "workload.num_requests=200", "workload.lengths.dataset=sharegpt", "autoscaler.name=hpa",
            "autoscaler.interval_s=2", "autoscaler.max_replicas=3", "autoscaler.pool=[p, d]",
            "pools=[{name: p, role: prefill, replicas: 1}, {name: d, role: decode, replicas: 1}]"]
    out = write_run(simulate(load_scenario(None, sets)), tmp_path / "run")
    html = write_run_report(out).read_text()
    assert '"name":"pool p"' in html and '"name":"pool d"' in html
    out = write_run(simulate(load_scenario(None, SETS)), tmp_path / "one")
    assert '"name":"pool ' not in write_run_report(out).read_text()  # (one pool: the total is its line)
