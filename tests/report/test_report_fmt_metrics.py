"""Formatting and the mapping from summary/scenario to labelled rows."""

from __future__ import annotations

import math

from servesim.report.fmt import format_delta, format_value
from servesim.report.metrics import one_line, scenario_brief, slo_targets, summary_metrics


def test_formats() -> None:
    assert format_value(0.2154, "ms") == "215.4 ms"
    assert format_value(8.389, "ms") == "8,389 ms"
    assert format_value(0.00123, "ms") == "1.230 ms"
    assert format_value(1234, "count") == "1,234"
    assert format_value(0.8997, "pct") == "90.0%"
    assert format_value(3.0781, "rate") == "3.078/s"
    assert format_value(None, "ms") == "–"
    assert format_value(math.nan, "s") == "–"


def test_deltas() -> None:
    assert format_delta(100.0, 125.0, "ms") == "+25.0%"
    assert format_delta(0.9, 0.75, "pct") == "-15.0 pt"
    assert format_delta(0, 0, "count") == "±0"
    assert format_delta(None, 1.0, "count") == ""


def test_summary_metrics_known_then_extra() -> None:
    summary = {
        "num_requests": 10, "ttft_s": {"mean": 0.1, "p50": 0.09, "p99": 0.3},
        "throughput": {"requests_per_s": 2.0, "batches_per_s": 7.0},
        "fairness": {"jain_index": 0.9, "per": {"a": 1.0}, "name": "jain"}, "qoe": 0.8,
        "per_tenant": {"a": {"num_requests": 5}}, "notes": "text is skipped",
    }
    by_key = {m.key: m for m in summary_metrics(summary)}
    assert by_key["num_requests"].kind == "count"
    assert by_key["ttft_s.p99"].kind == "ms" and by_key["ttft_s.p99"].better == -1
    assert "ttft_s.p90" not in by_key  # absent statistics are not invented
    assert by_key["throughput.batches_per_s"].value == 7.0
    assert by_key["fairness.jain_index"].value == 0.9
    assert by_key["fairness.per.a"].value == 1.0
    assert by_key["qoe"].value == 0.8
    assert not any(k.startswith(("per_tenant", "notes", "fairness.name")) for k in by_key)


def test_scenario_brief_and_slos() -> None:
    scenario = {
        "model": "m", "gpu": "H100", "tp": 2, "scheduler": {"name": "fcfs", "x": 1},
        "workload": {"arrivals": {"kind": "poisson", "rate_per_s": 3}}, "slo": {"ttft_s": 0.5, "tpot_s": None},
        "unknown": object(),
    }
    brief = dict(scenario_brief(scenario))
    assert brief["Scheduler"] == "fcfs"
    assert brief["Workload"] == "arrivals={kind=poisson, rate_per_s=3}"
    assert brief["SLO"] == "ttft_s=0.5"
    assert slo_targets(scenario) == {"ttft_s": 0.5}
    assert slo_targets({}) == {}
    assert len(one_line("x" * 500)) == 200
