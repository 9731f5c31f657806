"""Prefix caching as the simulation predicts: a conversation's turns hit the prefix cache,
and the served trace replays with the same hits."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from servesim.scenario import load_scenario
from servesim.simulation import simulate

from tests.serve.conftest import running_server

SYSTEM = "You are a careful assistant who answers questions about servers. " * 20


def counter(url: str, name: str) -> float:
    for fam in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        for s in fam.samples:
            if s.name == name:
                return s.value
    raise KeyError(name)


def test_shared_prefixes_hit_and_replay_identically(tmp_path):
    trace = tmp_path / "served.csv"
    messages = [{"role": "system", "content": SYSTEM}]
    prompts = []
    with running_server("--time-scale", "0.1", "--trace-out", str(trace)) as (url, _):
        for turn in range(4):  # one conversation, a turn at a time: each resends the history
            messages.append({"role": "user", "content": f"Question number {turn}: why is the sky blue?"})
            r = httpx.post(url + "/v1/chat/completions", timeout=30,
                           json={"messages": messages, "max_tokens": 20, "ignore_eos": True}).json()
            prompts.append(r["usage"]["prompt_tokens"])
            messages.append({"role": "assistant", "content": r["choices"][0]["message"]["content"]})
        hits = counter(url, "vllm:prefix_cache_hits_total")
        queries = counter(url, "vllm:prefix_cache_queries_total")
    assert queries == sum(prompts)
    # turn k's prompt starts with turn k-1's, and every full 16-token block of that is cached
    assert hits == sum(p // 16 * 16 for p in prompts[:-1]) > 0
    replay = simulate(load_scenario(None, [f"workload.trace.name={trace}"]))
    assert [r.prompt_len for r in replay.requests] == prompts
    assert replay.prefix_hits == (int(queries), int(hits))
