"""The perf CLI: catalog, estimate, calibrate, perf-report; bad input is one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from servesim.cli import app
from servesim.perf import PerfConfig, build_perf_model

HEADER = "source,model,gpu,tp,batch,input_len,output_len,metric,value,unit,notes\n"
TRT = "TensorRT-LLM v0.14.0 perf-overview.md (test copy)"
ROWS = [
    f"{TRT},Llama-3.1-8B,A100-SXM-80GB,1,max(IFB),128,128,output_throughput,6701.8,tok/s,FP16 weights",
    f"{TRT},Llama-3.1-8B,A100-SXM-80GB,1,max(IFB),2048,128,output_throughput,795.39,tok/s,FP16 weights",
    f"{TRT},Llama-3.1-8B,A100-SXM-80GB,1,max(IFB),1000,1000,output_throughput,3634.39,tok/s,FP16 weights",
    f"{TRT},Llama-3.1-8B,A100-SXM-80GB,1,max(IFB),5000,500,output_throughput,790.66,tok/s,FP16 weights",
]


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def _csv(tmp_path: Path, rows: list[str]) -> Path:
    path = tmp_path / "measured.csv"
    path.write_text(HEADER + "\n".join(rows) + "\n")
    return path


def test_estimate_json(runner: CliRunner) -> None:
    args = ["estimate", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--tp", "1", "--dtype", "fp8", "--engine", "trtllm",
            "--batch", "64", "--input-len", "2048", "--output-len", "128", "--json"]
    out = runner.invoke(app, args)
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    for key in ("ttft_s", "tpot_s", "e2e_s", "output_throughput_tok_s"):
        assert data[key] > 0
    assert data["batch"] == 64
    assert data["output_throughput_tok_s"] == pytest.approx(64 * 128 / data["e2e_s"])
    assert data["e2e_s"] == pytest.approx(data["ttft_max_s"] + 127 * data["tpot_s"])


def test_estimate_max_throughput_picks_largest_fitting_batch(runner: CliRunner) -> None:
    args = ["estimate", "--model", "Llama-3.1-70B", "--gpu", "H100-SXM", "--tp", "4", "--input-len", "1000",
            "--output-len", "1000", "--max-throughput", "--json"]
    data = json.loads(runner.invoke(app, args).stdout)
    assert data["fits_in_memory"] is True
    assert data["batch"] * 2000 <= data["kv_capacity_tokens"] < (data["batch"] + 1) * 2000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["estimate", "--model", "llama-3.1-8b", "--gpu", "h800", "--batch", "1", "--input-len", "8", "--output-len", "8"], "unknown gpu 'h800'; allowed:"),
        (["estimate", "--model", "gpt-5", "--gpu", "h100-sxm", "--batch", "1", "--input-len", "8", "--output-len", "8"], "unknown model 'gpt-5'; allowed:"),
        (["estimate", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--input-len", "8", "--output-len", "8"], "give --batch N or --max-throughput"),
        (["estimate", "--model", "llama-3.1-405b", "--gpu", "l4", "--input-len", "8", "--output-len", "8", "--max-throughput"], "has room for"),
        (["catalog", "widgets"], "unknown catalog 'widgets'; allowed: gpus, models, engines, constants"),
    ],
)
def test_bad_input_one_line_exit_2(runner: CliRunner, args: list[str], message: str) -> None:
    out = runner.invoke(app, args)
    assert out.exit_code == 2
    assert out.stderr.startswith("error: ") and message in out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert out.stdout == ""


@pytest.mark.parametrize("kind", ["gpus", "models", "engines", "constants"])
def test_catalog_lists(runner: CliRunner, kind: str) -> None:
    out = runner.invoke(app, ["catalog", kind, "--json"])
    assert out.exit_code == 0
    names = [row["name"] for row in json.loads(out.stdout)]
    expected = {"gpus": "h100-sxm", "models": "deepseek-v3", "engines": "trtllm", "constants": "eta_compute"}[kind]
    assert expected in names


def test_calibrate_writes_usable_file(runner: CliRunner, tmp_path: Path) -> None:
    measured = _csv(tmp_path, ROWS)
    output = tmp_path / "cal.yaml"
    out = runner.invoke(app, ["calibrate", str(measured), "-o", str(output), "--sweeps", "1"])
    assert out.exit_code == 0, out.output
    assert "median after" in out.stdout and "TensorRT-LLM v0.14.0" in out.stdout
    pm = build_perf_model("llama-3.1-8b", "a100-80gb", dtype="fp16", config=PerfConfig(engine="trtllm", calibration=str(output)))
    assert pm.constants.eta_compute != build_perf_model("llama-3.1-8b", "a100-80gb", dtype="fp16",
                                                         config=PerfConfig(engine="trtllm")).constants.eta_compute


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (f"{TRT},Llama-3.1-8B,A100-SXM-80GB,1,4,128,128,throughput,1,tok/s,x", "measured.csv:3: column 'metric': unknown 'throughput'"),
        (f"{TRT},Llama-3.1-8B,A100-SXM-80GB,one,4,128,128,output_throughput,1,tok/s,x", "measured.csv:3: column 'tp': expected an integer"),
        (f"{TRT},Llama-3.1-8B,A100-SXM-80GB,1,4,128,128,output_throughput,fast,tok/s,x", "measured.csv:3: column 'value': expected a number"),
        (f"{TRT},Llama-3.1-8B,A100-SXM-80GB,1,4,128,128,output_throughput,1,furlongs,x", "measured.csv:3: column 'unit'"),
    ],
)
def test_calibrate_bad_row_names_file_line_column(runner: CliRunner, tmp_path: Path, row: str, message: str) -> None:
    measured = _csv(tmp_path, [ROWS[0], row])
    output = tmp_path / "cal.yaml"
    out = runner.invoke(app, ["calibrate", str(measured), "-o", str(output)])
    assert out.exit_code == 2 and message in out.stderr and out.stderr.count("\n") == 1
    assert not output.exists()  # no partial output
    assert list(tmp_path.iterdir()) == [measured]


def test_calibrate_missing_file(runner: CliRunner, tmp_path: Path) -> None:
    out = runner.invoke(app, ["calibrate", str(tmp_path / "nope.csv"), "-o", str(tmp_path / "c.yaml")])
    assert out.exit_code == 2 and "cannot read measured points" in out.stderr


def test_perf_report_rewrites_only_the_marked_table(runner: CliRunner, tmp_path: Path) -> None:
    measured = _csv(tmp_path, ROWS)
    docs = tmp_path / "doc.md"
    docs.write_text("# Title\n\n<!-- perf-report:begin -->\nOLD-TABLE\n<!-- perf-report:end -->\n\nAfter.\n")
    out = runner.invoke(app, ["perf-report", "--measured", str(measured), "--docs", str(docs)])
    assert out.exit_code == 0, out.output
    text = docs.read_text()
    assert text.startswith("# Title\n") and text.endswith("\nAfter.\n") and "OLD-TABLE" not in text
    assert "| TensorRT-LLM v0.14.0 | throughput | 4 |" in text
    docs.write_text("no markers")
    out = runner.invoke(app, ["perf-report", "--measured", str(measured), "--docs", str(docs)])
    assert out.exit_code == 2 and "missing the markers" in out.stderr
