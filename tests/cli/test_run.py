"""`servesim run` end to end: files written, same seed -> same bytes, bad input -> one line + exit 2."""

from __future__ import annotations

import json
from pathlib import Path
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from servesim.cli import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

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


def test_the_console_says_what_the_autoscaler_transfers_and_migrations_did(tmp_path):
    # (the summary's elastic, disaggregation and migration sections: one line each, from its numbers)
    res = CliRunner().invoke(app, ["run", str(EXAMPLES / "mooncake-pd.yaml"), "--out", str(tmp_path / "pd"),
                                   "--set", "workload.trace.end_s=60", "--set", "autoscaler.name=dynamo-planner",
                                   "--set", "autoscaler.pool=[prefill, decode]", "--set", "autoscaler.interval_s=10"])
    assert res.exit_code == 0, res.output
    e = json.loads((tmp_path / "pd" / "summary.json").read_text())["elastic"]
    d = json.loads((tmp_path / "pd" / "summary.json").read_text())["disaggregation"]
    assert (f"autoscaler dynamo-planner: {e['num_scale_ups']} up, {e['num_scale_downs']} down of "
            f"{e['num_decisions']} decisions") in res.output
    assert f"cost: {e['gpu_hours']:.2f} GPU-hours, {e['energy_kwh']:.2f} kWh, ${e['cost_usd']:.2f}" in res.output
    assert f"prefill/decode: {d['num_transfers']} KV transfers" in res.output
    res = CliRunner().invoke(app, ["run", "--out", str(tmp_path / "mg"), "--set", "workload.trace.end_s=300",
                                   "--set", "workload.trace.speedup=8", "--set", "replicas=3", "--set",
                                   "migration.enabled=true", "--set", "engine.gpu_memory_utilization=0.3",
                                   "--set", "router.name=llumnix"])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "mg" / "summary.json").read_text())["migration"]
    assert m["num_migrations"] > 0
    assert f"migration: {m['num_migrations']} done, {m['num_aborted']} aborted, {m['copied_blocks']:,} blocks copied" in res.output


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


def test_replicas_unset_to_size_pools_instead(tmp_path):
    """A file's `replicas` is unset with null, so that pools can size the cluster."""
    scenario = tmp_path / "s.yaml"
    scenario.write_text("replicas: 3\n")
    res = run_cli(str(scenario), "--out", str(tmp_path / "r"), "-q", "--set", "replicas=null",
                  "--set", "pools=[{name: a, replicas: 2}]", *SHORT)
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["cluster"]["num_replicas"] == 2


def _gzip(text: str) -> bytes:
    import gzip

    return gzip.compress(text.encode())


TWO_ROWS = "arrival_s,prompt_len,output_len\n0,100,10\n"
# Files every bad-input case can name as {tmp}/NAME.
FILES: dict[str, bytes] = {
    "latin1.csv": "arrival_s,prompt_len,output_len\n0,100,10\n1,50,5 caf\xe9\n".encode("latin-1"),
    "binary.jsonl": bytes(range(256)) * 4,
    "plain.csv.gz": TWO_ROWS.encode(),
    "truncated.csv.gz": _gzip(TWO_ROWS + "".join(f"{i},100,10\n" for i in range(1, 4000)))[:400],
    "header-only.csv": b"arrival_s,prompt_len,output_len\n",
    "far.csv": (TWO_ROWS + "1e308,100,10\n").encode(),
    "a-file": b"not a folder",
}
TRACE = "workload:\n  trace: {tmp}/%s\n"

# name -> (scenario file content, extra CLI arguments, text the one error line must contain)
BAD: dict[str, tuple[str | bytes, list[str], str]] = {
    "malformed yaml": ("scenario: [unclosed", [], "malformed YAML"),
    "unknown field": ("engine:\n  max_num_seq: 4\n", [], "unknown field 'engine.max_num_seq'; allowed: block_size"),
    "negative rate": ("workload:\n  arrival: {process: poisson, rate_per_s: -2}\n", [], "rate_per_s"),
    "unknown model": ("model: llama-9\n", [], "llama-3.1-8b"),
    "unknown gpu": ("gpu: h800\n", [], "h100-sxm"),
    "unknown scheduler": ("scheduler: {name: magic}\n", [], "unknown scheduler 'magic'; allowed: andes"),
    # issue 16, item 4: tracebacks before
    "non-utf8 scenario": ("seed: 1\n".encode() + b"model: caf\xe9\n", [], "not a UTF-8 text file"),
    "binary scenario": (bytes(range(256)) * 4, [], "not a UTF-8 text file"),
    "non-utf8 trace": (TRACE % "latin1.csv", [], "latin1.csv: not a UTF-8 text file"),
    "binary trace": (TRACE % "binary.jsonl", [], "binary.jsonl: not a UTF-8 text file"),
    "gz that is not gzip": (TRACE % "plain.csv.gz", [], "plain.csv.gz: not a readable gzip file"),
    "truncated gz": (TRACE % "truncated.csv.gz", [], "truncated.csv.gz: not a readable gzip file"),
    "negative seed": ("seed: -1\n", [], "seed: Input should be greater than or equal to 0"),
    "out under a file": ("seed: 1\n", ["--out", "{tmp}/a-file/run"], "'{tmp}/a-file' is a file, not a folder"),
    "out unwritable": ("seed: 1\n", ["--out", "/proc/servesim-test/run"], "cannot write there"),
    "timestamp 1e308": (TRACE % "far.csv", [], "arrives at 1e+308 s, beyond the limit of 1e+09 s"),
    "eta_memory 0": ("perf: {overrides: {eta_memory: 0}}\n", [], "constant 'eta_memory' must be in (0, 1], got 0"),
    # item 5: nonsense accepted before
    "eta_memory negative": ("perf: {overrides: {eta_memory: -1}}\n", [], "'eta_memory' must be in (0, 1]"),
    "eta_compute above 1": ("perf: {overrides: {eta_compute: 1.5}}\n", [], "'eta_compute' must be in (0, 1]"),
    "step overhead negative": ("perf: {overrides: {step_overhead_s: -0.001}}\n", [], "'step_overhead_s' must be >= 0"),
    "token budget below max_model_len": (
        "engine: {enable_chunked_prefill: false, max_num_batched_tokens: 4096}\n", [],
        "engine.max_num_batched_tokens (4096) is smaller than engine.max_model_len (131072) with chunked prefill off"),
    "token budget below max_num_seqs": ("engine: {max_num_batched_tokens: 64}\n", [],
                                        "max_num_batched_tokens (64) must be >= engine.max_num_seqs (1024)"),
    "empty trace": (TRACE % "header-only.csv", [], "no request to simulate: trace '{tmp}/header-only.csv' has no rows"),
    # item 8: misleading messages before
    "scenario is a folder": (None, ["{tmp}"], "is a folder; give a scenario YAML file"),
    "huge token budget": ("engine: {max_num_batched_tokens: 1000000}\n", [],
                          "activations of max_num_batched_tokens 1000000 110.7 GiB"),
    "model does not fit": ("model: llama-3.1-70b\n", [], "llama-3.1-70b weights 131.4 GiB"),
    "empty out": ("seed: 1\n", ["--out", ""], "--out is empty"),
    "negative cold start": ("autoscaler: {name: kpa, cold_start: {engine_start_s: -5}}\n", [], "engine_start_s"),
    "min above max replicas": ("autoscaler: {name: hpa, min_replicas: 5, max_replicas: 2}\n", [],
                               "min_replicas (5) is above max_replicas (2)"),
    "power cap below idle": ("power: {gpu_power_cap_w: 50}\n", [], "50 W is not above the idle power of h100-sxm (75 W)"),
    "row budget below idle": ("power: {row_power_budget_w: 60}\n", [],
                              "60 W is not above the idle power of one default replica"),
    "unknown autoscaler": ("autoscaler: {name: magic}\n", [], "unknown autoscaler 'magic'; allowed: aibrix-apa"),
    "decode pool without prefill": ("pools: [{name: d, role: decode}]\n", [],
                                    "pools.d: a decode pool has no route from a prefill pool"),
    "prefill pool without decode": ("pools: [{name: p, role: prefill}, {name: m}]\n", [],
                                    "pools.p: a prefill pool needs a decode pool"),
    "zero-bandwidth link": ("network: {inter_node: {bandwidth_GBps: 0}}\n", [], "bandwidth_GBps"),
    "unknown link kind": ("network: {inter_node: ib-xdr}\n", [], "unknown link kind 'ib-xdr'; allowed: nvlink4"),
    "attention DP with prefill/decode pools": (
        "perf: {data_parallel_size: 2}\npools: [{name: p, role: prefill}, {name: d, role: decode}]\n", [],
        "perf.data_parallel_size 2: attention data parallelism does not take KV hand-offs"),
    "attention DP with migration": ("perf: {data_parallel_size: 2}\nreplicas: 2\nmigration: {enabled: true}\n", [],
                                    "perf.data_parallel_size 2: live migration moves requests between single-rank"),
    "attention DP with LoRA adapters": ("perf: {data_parallel_size: 2}\nworkload: {attributes: {loras: {count: 3}}}\n", [],
                                        "perf.data_parallel_size 2: LoRA adapters (workload.attributes.loras) are served "
                                        "by single-rank replicas only"),
    "scale to zero with prefill/decode pools": (
        "autoscaler: {name: kpa, max_replicas: 3, min_replicas: 0, pool: d}\n"
        "pools: [{name: p, role: prefill}, {name: d, role: decode}]\n", [],
        "autoscaler (kpa): min_replicas 0 scales to zero only without prefill/decode pools"),
    "bad policy value": ("scheduler: {name: trtllm, capacity_scheduler_policy: X}\n", [],
                         "bad.yaml: scheduler.capacity_scheduler_policy: Input should be 'GUARANTEED_NO_EVICT' or "
                         "'MAX_UTILIZATION' (got 'X')"),
    "replicas beside pools": ("replicas: 3\npools: [{name: a, replicas: 2}]\n", [],
                              "give either `replicas` (3) or `pools`, not both"),
    "empty decode pool": ("pools: [{name: p, role: prefill}, {name: d, role: decode, replicas: 0}]\n", [], "replicas"),
    "bad pool role": ("pools: [{name: p, role: encode}]\n", [], "role"),
    "sglang decode pool making the first token": (
        "scheduler: sglang\ndisaggregation: {first_token: decode}\n"
        "pools: [{name: p, role: prefill}, {name: d, role: decode}]\n", [],
        "pools.d: disaggregation.first_token decode: an sglang decode pool takes the first token from the prefill "
        "server; allowed: first_token prefill"),  # (every request stuck on the decode replica before, none finished)
    "migration with P/D pools": ("migration: {enabled: true}\npools: [{name: p, role: prefill}, {name: d, role: decode}]\n",
                                 [], "migration.enabled works between mixed pools only"),
    # issue 11 item 3: LoRA adapters
    "negative max_loras": ("engine: {max_loras: -1}\n", [], "engine.max_loras: Input should be greater than or equal to 1"),
    "max_cpu_loras below max_loras": ("engine: {max_loras: 4, max_cpu_loras: 2}\n", [],
                                      "max_cpu_loras (2) must be >= max_loras (4)"),
    "unknown lora router param": ("router: {name: lora-affinity, lora_wieght: 2}\n", [],
                                  "unknown field 'router.lora_wieght'; allowed: loaded_score, free_slot_score"),
    "lora mix with a scheduler that cannot serve it": (
        "scheduler: sarathi\nworkload: {attributes: {loras: {count: 3}}}\n", [],
        "bad.yaml: scheduler: sarathi cannot serve LoRA adapters (workload.attributes.loras); allowed: continuum, vllm"),
    # round 46: values the schema took and the run failed on
    "infinite link latency": ("network: {inter_node: {latency_s: .inf}}\n", [],
                              "network.inter_node.latency_s: Input should be a finite number (got inf)"),
    "not-a-number scheduler parameter": ("scheduler: {name: andes, horizon_s: .nan}\n", [],
                                         "scheduler.horizon_s: Input should be a finite number (got nan)"),
    "zero tenant weight": ("scheduler: {name: vtc, tenant_weights: {a: 0}}\n", [],
                           "scheduler.tenant_weights.a: Input should be greater than 0 (got 0)"),
    "replicas past the limit": ("replicas: 20000\n", [], "replicas: Input should be less than or equal to 10000"),
    "autoscaler past the replica limit": ("autoscaler: {name: hpa, max_replicas: 1099511627776}\n", [],
                                          "autoscaler.max_replicas: Input should be less than or equal to 10000"),
    "autellix levels beyond a float": ("scheduler: {name: autellix, num_queues: 2000}\n", [],
                                       "bad.yaml: scheduler: the last level threshold base_quantum_s x quantum_ratio^"
                                       "(num_queues - 2) (0.5 x 2^1998) is beyond a float"),
    "shared prefix groups past the limit": ("workload: {shared_prefix: {groups: 1000000}}\n", [],
                                            "workload.shared_prefix.groups: Input should be less than or equal to 10000"),
    "llumnix router block size 0": ("replicas: 2\nrouter: {name: llumnix, block_size: 0}\n", [],
                                    "router.block_size: Input should be greater than or equal to 1 (got 0)"),
    "negative lora share": ("workload: {attributes: {loras: {proportions: {a: -1}}}}\n", [],
                            "loras.proportions must be >= 0 with a positive sum"),
}


def _run_bad(tmp_path, case: str, invoke) -> None:
    """Run BAD[case] through `invoke(args, cwd) -> (exit code, stdout, stderr)` and check the
    one-line error, exit 2, and that nothing was written."""
    text, extra, expected = BAD[case]
    for name, content in FILES.items():
        (tmp_path / name).write_bytes(content)
    args = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    if text is not None:
        scenario = tmp_path / "bad.yaml"
        content = text.replace("{tmp}", str(tmp_path)) if isinstance(text, str) else text
        scenario.write_bytes(content.encode() if isinstance(content, str) else content)
        args.insert(0, str(scenario))
    out = tmp_path / "out"
    if "--out" not in args:
        args += ["--out", str(out)]
    before = sorted(p.name for p in tmp_path.iterdir())
    code, stdout, stderr = invoke(["run", *args, "-q"], tmp_path)
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert expected.replace("{tmp}", str(tmp_path)) in lines[0]
    assert "Traceback" not in stderr + stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no result folder, nothing half-written


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_one_line_exit_2_no_results(tmp_path, monkeypatch, case):
    # In-process (a `python -m servesim` per case cost ~2 CPU s of imports, 47 cases): the
    # command's own exit code and stderr; an exception that escaped the command would show as
    # CliRunner's exit code 1, not 2. test_bad_input_from_a_real_process checks the process.
    def invoke(args, cwd):
        monkeypatch.chdir(cwd)
        res = CliRunner().invoke(app, args)
        assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
        return res.exit_code, res.stdout, res.stderr

    _run_bad(tmp_path, case, invoke)


@pytest.mark.parametrize("case", ["truncated gz"])  # an error raised deep in reading the trace
def test_bad_input_from_a_real_process(tmp_path, case):
    # the same checks on a real `python -m servesim run`: its stderr is nothing but the one line
    def invoke(args, cwd):
        proc = subprocess.run([sys.executable, "-m", "servesim", *args], capture_output=True, text=True,
                              timeout=120, cwd=cwd)
        return proc.returncode, proc.stdout, proc.stderr

    _run_bad(tmp_path, case, invoke)


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


def test_rerun_without_report_removes_the_stale_report(tmp_path):
    out = tmp_path / "r"
    assert run_cli("--out", str(out), "-q", "--report", "--set", "workload.trace.end_s=30").exit_code == 0
    (out / "notes.txt").write_text("mine")
    assert (out / "report.html").exists()
    assert run_cli("--out", str(out), "-q", "--set", "workload.trace.end_s=20").exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "requests.csv", "scenario.yaml", "summary.json",
                                                      "timeseries.csv"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "servesim", "run", *args], capture_output=True, text=True, timeout=120)


def test_every_request_rejected_says_why(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,prompt_len,output_len\n0,5000,10\n1,6000,10\n")
    proc = _cli("--set", f"workload.trace.name={trace}", "--set", "engine.max_model_len=4096",
                "--out", str(tmp_path / "o"), "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == ("warning: every request rejected (2); the first, request 0: "
                                   "prompt + output = 5010 tokens > max_model_len 4096")
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["warnings"] == [proc.stderr.strip()[9:]]


def test_trace_in_milliseconds_read_as_seconds_is_warned_about(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,prompt_len,output_len\n" + "".join(f"{i * 250_000},100,10\n" for i in range(12)))
    proc = _cli("--set", f"workload.trace.name={trace}", "--out", str(tmp_path / "o"), "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith("warning: the trace's 12 requests arrive over 31.8 days, one every 250,000 s")
    assert "timestamp_ms" in proc.stderr
    assert _cli("--out", str(tmp_path / "n"), "-q", *SHORT).stderr == ""  # an ordinary trace: no warning


def test_csv_with_byte_order_mark_reads_its_first_column(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_bytes("\ufeffarrival_s,prompt_len,output_len\n0,100,10\n1,50,5\n".encode())
    res = run_cli("--set", f"workload.trace.name={trace}", "--out", str(tmp_path / "o"), "-q")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["num_finished"] == 2


def test_chunked_prefill_off_gets_a_budget_of_max_model_len(tmp_path):
    res = run_cli("--set", "engine.enable_chunked_prefill=false", "--out", str(tmp_path / "o"), "-q", *SHORT)
    assert res.exit_code == 0, res.output
    assert "max_num_batched_tokens: 131072" in (tmp_path / "o" / "scenario.yaml").read_text()  # as vLLM sets it


def test_help_keeps_text_in_brackets():
    res = CliRunner().invoke(app, ["run", "--help"], terminal_width=400)
    flat = " ".join(res.stdout.replace("│", " ").split())
    assert "fixed prompt length, or [low, high] uniform" in flat
    assert "workload.lengths.prompt_tokens (int or [int, int], default 512)" in flat
    assert "[[time_s, rate_per_s], ...]" in flat
    # a tuple of any length reads as a list, not as a pair ending in Python's Ellipsis
    assert "engine.spec_acceptance_curve (list of [int, float], default None)" in flat


def test_a_terminated_run_leaves_no_scratch_folders(tmp_path):
    # SIGTERM (a `kill`, a job scheduler's limit) mid-run: the spilled step log's and rows' scratch
    # folder is removed and nothing is written, as on an error; the exit code says "terminated"
    import os
    import signal
    import time

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    # a run of about 100 s (a million requests), so the signal lands mid-run even when this
    # process is descheduled for a while on a loaded machine
    long_run = tmp_path / "long.yaml"
    long_run.write_text("workload: {arrival: {process: poisson, rate_per_s: 5}, lengths: {dataset: sharegpt},"
                        " num_requests: 1000000}\n")
    proc = subprocess.Popen([sys.executable, "-m", "servesim", "run", str(long_run), "-q", "--out", str(tmp_path / "out")],
                            cwd=tmp_path, env={**os.environ, "TMPDIR": str(scratch)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def run_folders():  # (other libraries may make short-lived files there too)
        return [p for p in scratch.iterdir() if p.name.startswith("servesim-run-")]

    try:
        # wait until the loop runs (the replicas' step-end files exist), so the signal lands in the
        # loop and not before the handler is installed (a swallowed exit: the test below)
        deadline = time.monotonic() + 60
        while (not any(any(p.iterdir()) for p in run_folders()) and proc.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be terminated"
        assert len(run_folders()) == 1  # the run's scratch folder
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:  # a failed check must not leave the million-request run going
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert list(scratch.iterdir()) == [] and not (tmp_path / "out").exists()


def test_a_swallowed_sigterm_exits_at_the_runs_next_progress_point(monkeypatch):
    # An extension module being imported when SIGTERM lands (numpy.random's, at a run's start) can
    # swallow the handler's SystemExit; the quiet run's progress callback then exits instead of
    # letting the run finish and write its results
    import signal

    from servesim.cli import terminate
    from servesim.cli.display import progress_bar
    from servesim.scenario import Scenario
    from servesim.simulation import simulate

    monkeypatch.setattr(terminate, "_received", [])
    try:
        terminate._handle(signal.SIGTERM, None)
    except SystemExit:
        pass  # what the import did
    scn = Scenario.model_validate({"workload": {"num_requests": 5000, "arrival": {"rate_per_s": 50}}})
    with progress_bar(enabled=False) as progress, pytest.raises(SystemExit) as exit_:
        simulate(scn, progress=progress, keep_requests=False)
    assert exit_.value.code == 128 + signal.SIGTERM
