"""1,000 concurrent streams on loopback: every one completes, memory stays bounded, and
everything is released afterwards."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest

from tests.serve.conftest import running_server

STREAMS, TOKENS = 1000, 32


def peak_rss_mib(pid: int) -> float:
    return int(re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)) / 1024


async def storm(url: str) -> tuple[list[int], int]:
    open_now = peak = 0

    async def one(client: httpx.AsyncClient) -> int:
        nonlocal open_now, peak
        body = {"prompt": "many streams " * 10, "max_tokens": TOKENS, "ignore_eos": True, "stream": True}
        tokens = 0
        async with client.stream("POST", url + "/v1/completions", json=body) as r:
            assert r.status_code == 200
            open_now += 1  # the response has started: the stream is open until [DONE]
            peak = max(peak, open_now)
            async for line in r.aiter_lines():
                tokens += line.startswith("data: {")
            open_now -= 1
        return tokens

    limits = httpx.Limits(max_connections=STREAMS, max_keepalive_connections=STREAMS)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        counts = await asyncio.gather(*(one(client) for _ in range(STREAMS)))
    return counts, peak


@pytest.mark.alone  # all 1,000 open at once needs the client to start them faster than tokens arrive
def test_thousand_concurrent_streams(tmp_path):
    # slowed down 5x: every stream is still open when the last one gets its first token
    with running_server("--time-scale", "5") as (url, proc):
        idle_mib = peak_rss_mib(proc.pid)
        counts, peak = asyncio.run(storm(url))
        grown_mib = peak_rss_mib(proc.pid) - idle_mib
        text = httpx.get(url + "/metrics").text
    assert counts == [TOKENS] * STREAMS
    assert peak == STREAMS  # all of them streaming at the same time
    assert grown_mib < 200, grown_mib  # measured: about 40 MiB for 1,000 streams
    assert re.search(r"vllm:num_requests_running\{[^}]*\} 0\.0", text)
    assert re.search(r"vllm:kv_cache_usage_perc\{[^}]*\} 0\.0", text)
    assert re.search(r'vllm:request_success_total\{[^}]*finished_reason="length"[^}]*\} 1000\.0', text)
