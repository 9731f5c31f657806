"""`servesim serve` refuses bad options with one line and exit code 2, before listening."""

from __future__ import annotations

import socket
import sys

import pytest
from typer.testing import CliRunner

from servesim.cli import app


@pytest.mark.parametrize("args, message", [
    (["--time-scale", "0"], "--time-scale: Input should be greater than 0"),
    (["--port", "70000"], "--port: Input should be less than or equal to 65535"),
    (["--tokenizer", "bert"], "--tokenizer: Input should be 'auto', 'tiktoken' or 'approx'"),
    (["--set", "scheduler.name=nope"], "nope"),
])
def test_bad_options_exit_2(args, message):
    res = CliRunner().invoke(app, ["serve", *args])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output


def test_port_in_use_exits_2():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        res = CliRunner().invoke(app, ["serve", "--port", str(port), "--tokenizer", "approx"])
    assert res.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in res.output


def test_without_the_serve_extra_it_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if not installed
    res = CliRunner().invoke(app, ["serve"])
    assert res.exit_code == 2
    assert "servesim serve needs uvicorn: pip install 'servesim[serve]'" in res.output
