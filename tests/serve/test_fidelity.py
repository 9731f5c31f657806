"""Observe, then replay: a Poisson load at time scale 1, measured by a client that follows
vLLM's `bench serve` protocol (streaming completions; TTFT at the first chunk with text, TPOT =
(latency - TTFT) / (tokens - 1)), agrees with `simulate()` replaying the trace the server wrote
(same arrival times, lengths and prefix hashes), request by request.

The client's TTFT also holds what the simulation cannot know: its own HTTP path into the server
(JSON encoding, the connection, parsing: 2-20 ms on a quiet machine, 100-300 ms on a CI host
running at a third of its speed). The server says where simulated time 0 is on the wall clock
(`servesim:clock_origin_unix_seconds` in /metrics), so the client times that way in itself: each
request's arrival in the served trace, placed on the client's clock, minus its send time. The
check: the way in is never negative (the server did not stamp a request before it was sent), no
first token reaches the client before its simulated time, and what is left (the client's TTFT
less its way in, against the replayed TTFT; the client's TPOT against the replayed) is off by a
median of under 10 % of the replayed value."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time

import httpx
import numpy as np
import pytest

from servesim.scenario import load_scenario
from servesim.simulation import simulate
from servesim.workload.request import RequestState

from tests.serve.conftest import running_server

# A slow GPU and prompts of 5,000-7,500 tokens at 0.4 requests/s keep TTFT near two seconds, so
# the token's way back (a step's release and the stream's chunk) is small against what is
# measured. The test runs `alone` (no other test runs meanwhile): a CPU-bound test beside it on
# 2 cores tripled the HTTP path's time.
SCENARIO = ["model=llama-3.1-8b", "gpu=l4", "engine.max_model_len=8192"]
RATE_PER_S, DURATION_S = 0.4, 30.0
# Nagle's algorithm holds a request's body until the server acknowledges its headers (up to
# 40 ms of delayed ACK); aiohttp, which vLLM's `bench serve` uses, sets TCP_NODELAY, so do we.
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


async def one_request(client: httpx.AsyncClient, url: str, start_s: float, prompt: list[int], out_len: int) -> dict:
    await asyncio.sleep(max(0.0, start_s - time.time()))
    body = {"model": "llama-3.1-8b", "prompt": prompt, "max_tokens": out_len, "ignore_eos": True, "stream": True}
    sent = time.time()  # Unix time, the clock the server's origin is given on
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
                    ttft = time.time() - sent
    latency = time.time() - sent
    assert tokens == out_len
    return {"key": (len(prompt), out_len), "sent": sent, "ttft": ttft, "tpot": (latency - ttft) / (tokens - 1)}


async def load(url: str) -> list[dict]:
    rng = np.random.default_rng(7)
    n = int(RATE_PER_S * DURATION_S)
    gaps = rng.exponential(1 / RATE_PER_S, n)
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    transport = httpx.AsyncHTTPTransport(limits=limits, socket_options=NODELAY)
    async with httpx.AsyncClient(timeout=120, transport=transport) as client:
        t0 = time.time() + 0.2
        jobs = [one_request(client, url, t0 + float(t), rng.integers(1000, 30000, int(p)).tolist(), int(o))
                for t, p, o in zip(np.cumsum(gaps), rng.integers(5000, 7500, n), rng.integers(16, 64, n))]
        return await asyncio.gather(*jobs)


@pytest.mark.alone
def test_client_latencies_match_the_replayed_simulation(tmp_path):
    trace = tmp_path / "served.csv"
    args = ["--trace-out", str(trace)] + [a for s in SCENARIO for a in ("--set", s)]
    with running_server(*args) as (url, _):
        measured = asyncio.run(load(url))
        metrics = httpx.get(url + "/metrics", timeout=10).text
    origin = float(re.search(r"^servesim:clock_origin_unix_seconds\{[^}]*\} (\S+)$", metrics, re.M).group(1))
    result = simulate(load_scenario(None, SCENARIO + [f"workload.trace.name={trace}"]))
    cols = result.columns
    assert len(cols.id) == len(measured) and np.all(cols.state == int(RequestState.FINISHED))
    # the client's requests in the server's arrival order (no two have the same lengths)
    order = {k: i for i, k in enumerate(zip(cols.prompt_len.tolist(), cols.output_len.tolist()))}
    assert len(order) == len(measured)
    measured = sorted(measured, key=lambda m: order[m["key"]])
    # the served trace's own arrival times (a replay starts its clock at the first arrival)
    stamped = np.loadtxt(trace, delimiter=",", skiprows=1, usecols=0, ndmin=1)
    way_in = origin + stamped - np.array([m["sent"] for m in measured])  # the server's stamp, less the send
    print("way in (min, median, max):", way_in.min(), np.median(way_in), way_in.max())
    assert way_in.min() > -0.002, ("a request was stamped before the client sent it", way_in.min())
    sim = {"ttft": cols.first_token_s - cols.arrival_s,
           "tpot": (cols.finish_s - cols.first_token_s) / (cols.num_output_tokens - 1)}
    for name, want in sim.items():
        late = np.array([m[name] for m in measured]) - want - (way_in if name == "ttft" else 0.0)
        print(name, "replayed median:", np.median(want), "client late by (min, median, max):", late.min(),
              np.median(late), late.max())
        if name == "ttft":  # (a TPOT may come out shorter: its first token was the later one)
            assert late.min() > -0.002, ("a first token reached the client before its simulated time", late.min())
        assert np.median(np.abs(late)) < 0.10 * np.median(want), (name, np.median(late), np.median(want))
