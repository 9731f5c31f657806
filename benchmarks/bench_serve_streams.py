"""Load benchmark of `servesim serve`: N concurrent streams on loopback, peak server memory.

Run: python benchmarks/bench_serve_streams.py [--streams 1000] [--tokens 64] [--time-scale 1]
Starts the server in a subprocess on 127.0.0.1 (a free port), opens every stream at once with
httpx, reads every token, and reports completions, wall time, how late the last token came
compared with the simulated finish, and the server's resident memory before and at peak
(VmHWM). Target (issue 13): 1,000 concurrent streams, all complete, bounded memory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def rss_kib(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+)", text).group(1))


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def one(client: httpx.AsyncClient, url: str, max_tokens: int) -> tuple[int, float]:
    body = {"prompt": "stream load " * 20, "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
    n = 0
    t0 = time.perf_counter()
    async with client.stream("POST", url + "/v1/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            n += line.startswith("data: {")
    return n, time.perf_counter() - t0


async def load(url: str, streams: int, max_tokens: int) -> list[tuple[int, float]]:
    limits = httpx.Limits(max_connections=streams, max_keepalive_connections=streams)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        return await asyncio.gather(*(one(client, url, max_tokens) for _ in range(streams)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--time-scale", default="1")
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "servesim", "serve", "--host", "127.0.0.1", "--port", "0", "--tokenizer",
           "approx", "--time-scale", args.time_scale]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = "http://" + re.search(r"http://([\d.:]+)/v1", proc.stderr.readline()).group(1)
        while True:
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        rss0, cpu0 = rss_kib(proc.pid, "VmRSS"), cpu_s(proc.pid)
        t0 = time.perf_counter()
        results = asyncio.run(load(url, args.streams, args.tokens))
        wall = time.perf_counter() - t0
        cpu = cpu_s(proc.pid) - cpu0
        counts = [n for n, _ in results]
        client_e2e = sum(e for _, e in results) / len(results)
        metrics = httpx.get(url + "/metrics").text
        e2e = re.search(r'vllm:e2e_request_latency_seconds_sum\{[^}]*\} (\S+)', metrics).group(1)
        done = sum(c == args.tokens for c in counts)
        print(f"streams: {args.streams}, completed with {args.tokens} tokens: {done}")
        print(f"wall time: {wall:.2f} s; server CPU: {cpu:.2f} s; mean e2e latency: client {client_e2e:.2f} s, "
              f"simulated {float(e2e) / args.streams:.2f} s")
        print(f"server RSS: {rss0 / 1024:.1f} MiB idle, peak {rss_kib(proc.pid, 'VmHWM') / 1024:.1f} MiB")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
