"""Observe, then replay: a Poisson load at time scale 1, measured by a client that follows
vLLM's `bench serve` protocol (streaming completions; TTFT at the first chunk with text, TPOT =
(latency - TTFT) / (tokens - 1)), agrees within 10% with `simulate()` replaying the trace the
server wrote (same arrival times, lengths and prefix hashes)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import numpy as np

from servesim.scenario import load_scenario
from servesim.simulation import simulate
from servesim.workload.request import RequestState

from tests.serve.conftest import running_server

# A slow GPU keeps every step tens of milliseconds long, so a millisecond of HTTP or
# scheduling jitter on a shared machine is small against what is measured.
SCENARIO = ["model=llama-3.1-8b", "gpu=l4", "engine.max_model_len=4096"]
RATE_PER_S, DURATION_S = 2.0, 12.0


async def one_request(client: httpx.AsyncClient, url: str, start_s: float, prompt: list[int], out_len: int) -> dict:
    await asyncio.sleep(max(0.0, start_s - time.perf_counter()))
    body = {"model": "llama-3.1-8b", "prompt": prompt, "max_tokens": out_len, "ignore_eos": True, "stream": True}
    sent = time.perf_counter()
    ttft = None
    tokens = 0
    async with client.stream("POST", url + "/v1/completions", json=body) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            if json.loads(line[6:])["choices"][0]["text"]:
                tokens += 1
                if ttft is None:
                    ttft = time.perf_counter() - sent
    latency = time.perf_counter() - sent
    assert tokens == out_len
    return {"ttft": ttft, "tpot": (latency - ttft) / (tokens - 1)}


async def load(url: str) -> list[dict]:
    rng = np.random.default_rng(7)
    n = int(RATE_PER_S * DURATION_S)
    gaps = rng.exponential(1 / RATE_PER_S, n)
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        t0 = time.perf_counter() + 0.2
        jobs = [one_request(client, url, t0 + float(t), rng.integers(1000, 30000, int(p)).tolist(), int(o))
                for t, p, o in zip(np.cumsum(gaps), rng.integers(200, 1500, n), rng.integers(16, 64, n))]
        return await asyncio.gather(*jobs)


def test_client_latencies_match_the_replayed_simulation(tmp_path):
    trace = tmp_path / "served.csv"
    args = ["--trace-out", str(trace)] + [a for s in SCENARIO for a in ("--set", s)]
    with running_server(*args) as (url, _):
        measured = asyncio.run(load(url))
    result = simulate(load_scenario(None, SCENARIO + [f"workload.trace.name={trace}"]))
    cols = result.columns
    assert len(cols.id) == len(measured) and np.all(cols.state == int(RequestState.FINISHED))
    sim_ttft = cols.first_token_s - cols.arrival_s
    sim_tpot = (cols.finish_s - cols.first_token_s) / (cols.num_output_tokens - 1)
    got_ttft = np.array([m["ttft"] for m in measured])
    got_tpot = np.array([m["tpot"] for m in measured])
    for name, got, want in (("TTFT", got_ttft, sim_ttft), ("TPOT", got_tpot, sim_tpot)):
        print(name, "client mean, median:", np.mean(got), np.median(got), "simulated:", np.mean(want), np.median(want))
        for stat in (np.mean, np.median):
            assert abs(stat(got) / stat(want) - 1) < 0.10, (name, stat.__name__, stat(got), stat(want))
