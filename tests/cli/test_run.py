"""`servesim run` end to end: files written, same seed -> same bytes, bad input -> one line + exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from servesim.cli import app

SHORT = ["--set", "workload.trace.end_s=300"]  # the first 5 minutes of the Azure conv trace


def run_cli(*args: str):
    return CliRunner().invoke(app, ["run", *args])


def test_default_run_writes_every_output(tmp_path):
    res = run_cli("--out", str(tmp_path / "r"), "-q", *SHORT)
    assert res.exit_code == 0, res.output
    files = sorted(p.name for p in (tmp_path / "r").iterdir())
    assert files == ["requests.csv", "scenario.yaml", "summary.json", "timeseries.csv"]
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    for key in ("num_requests", "num_finished", "num_rejected", "simulated_time_s", "wall_time_s",
                "num_preemptions", "prefix_cache_hit_rate", "slo_attainment", "goodput_requests_per_s"):
        assert key in s
    for key in ("ttft_s", "tpot_s", "itl_s", "e2e_s"):
        assert set(s[key]) >= {"mean", "p50", "p90", "p99"}
    assert set(s["throughput"]) == {"requests_per_s", "input_tokens_per_s", "output_tokens_per_s"}
    assert s["num_finished"] == s["num_requests"] > 1000
    rows = (tmp_path / "r" / "requests.csv").read_text().splitlines()
    assert len(rows) == s["num_requests"] + 1
    assert "engine" in (tmp_path / "r" / "scenario.yaml").read_text()


def test_same_seed_is_byte_identical(tmp_path):
    for name in ("a", "b"):
        assert run_cli("--out", str(tmp_path / name), "-q", *SHORT).exit_code == 0
    sa, sb = (json.loads((tmp_path / n / "summary.json").read_text()) for n in ("a", "b"))
    sa.pop("wall_time_s"), sb.pop("wall_time_s")
    assert json.dumps(sa) == json.dumps(sb)
    for f in ("requests.csv", "timeseries.csv", "scenario.yaml"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


def test_seed_changes_generated_workload(tmp_path):
    gen = ["--set", "workload.trace=null", "--set", "workload.arrival.rate_per_s=5",
           "--set", "workload.lengths.dataset=sharegpt", "--set", "workload.num_requests=200"]
    for seed in (1, 2):
        assert run_cli("--out", str(tmp_path / str(seed)), "-q", "--set", f"seed={seed}", *gen).exit_code == 0
    assert (tmp_path / "1" / "requests.csv").read_bytes() != (tmp_path / "2" / "requests.csv").read_bytes()


def test_short_keys_override(tmp_path):
    res = run_cli("--out", str(tmp_path / "r"), "-q", "--set", "model=llama-3.1-70b", "--set", "gpu=a100-80gb",
                  "--set", "tp=4", "--set", "seed=7", *SHORT)
    assert res.exit_code == 0, res.output
    text = (tmp_path / "r" / "scenario.yaml").read_text()
    assert "model: llama-3.1-70b" in text and "tp: 4" in text and "seed: 7" in text
    assert "max_num_batched_tokens: 2048" in text  # vllm serve default on A100


BAD = {
    "malformed yaml": ("scenario: [unclosed", "malformed YAML"),
    "unknown field": ("engine:\n  max_num_seq: 4\n", "unknown field 'engine.max_num_seq'; allowed: block_size"),
    "negative rate": ("workload:\n  arrival: {process: poisson, rate_per_s: -2}\n", "rate_per_s"),
    "unknown model": ("model: llama-9\n", "llama-3.1-8b"),
    "unknown gpu": ("gpu: h800\n", "h100-sxm"),
    "unknown scheduler": ("scheduler: {name: magic}\n", "unknown scheduler 'magic'; allowed: andes"),
    "decode pool without prefill": ("pools: [{name: d, role: decode}]\n",
                                    "pools.d: a decode pool has no route from a prefill pool"),
    "prefill pool without decode": ("pools: [{name: p, role: prefill}, {name: m}]\n",
                                    "pools.p: a prefill pool needs a decode pool"),
    "zero-bandwidth link": ("network: {inter_node: {bandwidth_GBps: 0}}\n", "bandwidth_GBps"),
    "unknown link kind": ("network: {inter_node: ib-xdr}\n", "unknown link kind 'ib-xdr'; allowed: nvlink4"),
    "empty decode pool": ("pools: [{name: p, role: prefill}, {name: d, role: decode, replicas: 0}]\n", "replicas"),
    "bad pool role": ("pools: [{name: p, role: encode}]\n", "role"),
    "migration with P/D pools": ("migration: {enabled: true}\npools: [{name: p, role: prefill}, {name: d, role: decode}]\n",
                                 "migration.enabled works between mixed pools only"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_one_line_exit_2_no_results(tmp_path, case):
    text, expected = BAD[case]
    scenario = tmp_path / "bad.yaml"
    scenario.write_text(text)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "servesim", "run", str(scenario), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert expected in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not out.exists()


def test_bad_trace_row_names_file_line_column(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                     "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:47.0,abc,10\n")
    out = tmp_path / "out"
    res = run_cli(str(_scenario(tmp_path, f"workload:\n  trace: {trace}\n")), "--out", str(out))
    assert res.exit_code == 2
    assert "t.csv" in res.output and "line 3" in res.output and "ContextTokens" in res.output
    assert not out.exists()


def test_bad_override_syntax(tmp_path):
    res = run_cli("--set", "tp", "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "KEY=VALUE" in res.output


def _scenario(tmp_path, text):
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return p


def test_skip_bad_rows_counts_them_in_the_summary(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                     "2023-11-16 18:15:46.0,374,44\n2023-11-16 18:15:47.0,abc,10\n2023-11-16 18:15:48.0,100,5\n")
    out = tmp_path / "out"
    res = run_cli(str(_scenario(tmp_path, f"workload:\n  trace: {{name: {trace}, skip_bad_rows: true}}\n")),
                  "--out", str(out), "-q")
    assert res.exit_code == 0, res.output
    s = json.loads((out / "summary.json").read_text())
    assert s["num_requests"] == 2 and s["num_skipped_trace_rows"] == 1


def test_report_flag_writes_report(tmp_path):
    res = run_cli("--out", str(tmp_path / "r"), "-q", "--report", "--set", "workload.trace.end_s=60")
    assert res.exit_code == 0, res.output
    html = (tmp_path / "r" / "report.html").read_text()
    assert "plotly" in html.lower() and "<script src=\"http" not in html
