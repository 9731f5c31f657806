"""Start `servesim serve` in a subprocess on a free loopback port, as users run it."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
httpx = pytest.importorskip("httpx")

SRC = str(Path(__file__).resolve().parents[2] / "src")


@contextlib.contextmanager
def running_server(*args: str):
    """Yield the base URL (http://127.0.0.1:PORT) of a server started with these CLI args."""
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("VLLM_API_KEY", None)
    cmd = [sys.executable, "-m", "servesim", "serve", "--port", "0", "--tokenizer", "approx", *args]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stderr.readline()
        m = re.search(r"http://([\d.]+):(\d+)/v1", line)
        assert m, f"server did not start: {line}{proc.stderr.read() if proc.poll() is not None else ''}"
        url = f"http://{m.group(1)}:{m.group(2)}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server not healthy after 30 s"
            time.sleep(0.05)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server():
    """A server ten times faster than real time, with a 4,096-token context and an API key."""
    with running_server("--time-scale", "0.1", "--set", "engine.max_model_len=4096", "--api-key", "sk-test") as (url, _):
        yield url
