"""benchmarks/bench_matrix.py: every cell is a valid scenario with the documented load scaling,
a cell reports its measurements from a fresh process, a stuck cell becomes "timeout", and the
table lands between the docs markers. (Speeds are the benchmark's business, not asserted here.)"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from servesim import load_scenario

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_matrix", ROOT / "benchmarks" / "bench_matrix.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.mark.parametrize("workload", list(bench.WORKLOADS))
def test_cells_scale_the_rate_with_the_replicas(workload: str):
    one = load_scenario(*bench.cell_overrides("sarathi", workload, 1, 300))
    eight = load_scenario(*bench.cell_overrides("sarathi", workload, 8, 300))
    assert (one.scheduler.name, one.workload.num_requests, one.replicas) == ("sarathi", 300, 1)
    assert (eight.replicas, eight.router.name) == (8, "least-requests")
    w1, w8 = one.workload, eight.workload
    if w1.trace is not None:
        assert w8.trace.speedup == pytest.approx(8 * w1.trace.speedup)
    else:
        assert w8.arrival.rate_per_s == pytest.approx(8 * w1.arrival.rate_per_s)


def test_workload_rates_are_the_documented_ones():
    assert load_scenario(*bench.cell_overrides("vllm", "azure-conv-10x", 1, 10)).workload.trace.speedup == 10
    spec = load_scenario(*bench.cell_overrides("vllm", "spec-decode", 1, 10))
    assert spec.engine.num_speculative_tokens == 3


def test_a_cell_runs_in_a_fresh_process_and_reports_its_numbers():
    cell = bench.spawn_cell("vllm", "azure-conv", 1, 40, timeout_s=300)
    assert cell["status"] == "ok", cell
    assert cell["requests"] == 40 and cell["steps"] > 0
    assert 0.0 <= cell["ff_share"] <= 1.0 and cell["cpu_s"] > 0 and cell["peak_rss_mb"] > 10
    row = bench.row("vllm", "azure-conv", 1, cell)
    assert row.startswith("| vllm | azure-conv | 1 | 40 |") and row.count("|") == 11


def test_a_cells_warm_up_run_comes_first_and_is_not_counted_and_the_best_of_its_runs_is_taken():
    cell = bench.spawn_cell("vllm", "azure-conv", 1, 40, timeout_s=300, warmup=15, repeat=2)
    assert cell["status"] == "ok", cell
    assert (cell["warmup_requests"], cell["requests"], cell["runs"]) == (15, 40, 2)
    once = bench.spawn_cell("vllm", "azure-conv", 1, 40, timeout_s=300)
    assert (once["warmup_requests"], once["runs"]) == (0, 1)


def test_a_cell_over_its_time_limit_is_reported_not_waited_for():
    assert bench.spawn_cell("vllm", "azure-conv", 1, 40, timeout_s=0.05) == {"status": "timeout"}
    assert bench.row("vllm", "azure-conv", 1, {"status": "timeout"}).count("|") == 11


def test_docs_table_is_replaced_between_the_markers(tmp_path, monkeypatch):
    doc = tmp_path / "performance.md"
    doc.write_text(f"intro\n{bench.BEGIN}\nold table\n{bench.END}\noutro\n")
    monkeypatch.setattr(bench, "DOCS", doc)
    bench.write_docs("| new |")
    assert doc.read_text() == f"intro\n{bench.BEGIN}\n| new |\n{bench.END}\noutro\n"


def test_unknown_names_are_refused_naming_the_allowed_ones():
    with pytest.raises(SystemExit, match="unknown workload nope; allowed: azure-conv, azure-conv-10x"):
        bench.pick("azure-conv,nope", list(bench.WORKLOADS), "workload")
    assert bench.pick("", ["a", "b"], "x") == ["a", "b"]


def test_a_repeat_below_one_is_refused_with_one_line_and_exit_code_2():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_matrix.py"), "--repeat", "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--repeat must be at least 1 (got 0)" in done.stderr
    assert "Traceback" not in done.stderr
