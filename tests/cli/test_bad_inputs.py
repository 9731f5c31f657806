"""Bad input to every command but `run` (its table is in test_run.py): one `error:` line, exit 2,
no traceback, nothing written."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from servesim.cli import app

from tests.cli.test_run import FILES

MEASURED_HEADER = "source,model,gpu,tp,batch,input_len,output_len,metric,value,unit,notes\n"
MORE_FILES = {
    "measured-latin1.csv": (MEASURED_HEADER + "caf\xe9,llama-3.1-8b,h100-sxm,1,1,128,128,tpot,5,ms,\n").encode("latin-1"),
    "measured-binary.csv": bytes(range(256)) * 4,
}
EST = ["estimate", "--gpu", "h100-sxm", "--input-len", "2048", "--output-len", "128"]

# name -> (arguments, text the one error line must contain)
BAD: dict[str, tuple[list[str], str]] = {
    "stats non-utf8 trace": (["trace", "stats", "{tmp}/latin1.csv"], "latin1.csv: not a UTF-8 text file"),
    "stats binary trace": (["trace", "stats", "{tmp}/binary.jsonl"], "binary.jsonl: not a UTF-8 text file"),
    "stats gz not gzip": (["trace", "stats", "{tmp}/plain.csv.gz"], "plain.csv.gz: not a readable gzip file"),
    "stats truncated gz": (["trace", "stats", "{tmp}/truncated.csv.gz"], "not a readable gzip file"),
    "stats folder": (["trace", "stats", "{tmp}/sub.csv"], "is a folder; give a .csv or .jsonl(.gz) file"),
    "convert non-utf8 trace": (["trace", "convert", "{tmp}/latin1.csv", "{tmp}/out.csv"], "not a UTF-8 text file"),
    "calibrate non-utf8": (["calibrate", "{tmp}/measured-latin1.csv", "--output", "{tmp}/c.yaml"],
                           "measured-latin1.csv: not a UTF-8 text file (found byte 0xe9)"),
    "calibrate binary": (["calibrate", "{tmp}/measured-binary.csv", "--output", "{tmp}/c.yaml"], "not a UTF-8 text file"),
    "estimate batch beyond memory": ([*EST, "--model", "llama-3.1-8b", "--batch", "4000"],
                                     "--batch 4000 of 2048 + 128 tokens does not fit the KV cache"),
    "estimate model beyond memory": ([*EST, "--model", "llama-3.1-70b", "--batch", "64"], "has room for 0 KV tokens"),
    "compare out under a file": (["compare", "--set", "scheduler.name=vllm,orca", "--out", "{tmp}/a-file/cmp"],
                                 "is a file, not a folder"),
    "compare empty out": (["compare", "--set", "scheduler.name=vllm,orca", "--out", ""], "--out is empty"),
    "compare negative seed": (["compare", "--set", "scheduler.name=vllm,orca", "--seed", "-1", "--out", "{tmp}/c"],
                              "seed: Input should be greater than or equal to 0"),
    "compare variant the catalogue refuses": (
        ["compare", "--set", "tp=1,3", "--set", "workload.num_requests=20", "--out", "{tmp}/c"],
        "tp 3 does not split llama-3.1-8b"),  # (checked before any variant runs: none is left half-written)
    "compare power cap below idle": (
        ["compare", "--set", "power.gpu_power_cap_w=400,50", "--set", "workload.num_requests=20", "--out", "{tmp}/c"],
        "power.gpu_power_cap_w: 50 W is not above the idle power of h100-sxm"),
    "generate folder scenario": (["trace", "generate", "{tmp}", "{tmp}/g.csv"], "is a folder"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, monkeypatch, case):
    for name, content in {**FILES, **MORE_FILES}.items():
        (tmp_path / name).write_bytes(content)
    (tmp_path / "sub.csv").mkdir()
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    args, expected = BAD[case]
    res = CliRunner().invoke(app, [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert res.exit_code == 2, (res.output, res.exception)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], res.stderr
    assert res.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before
