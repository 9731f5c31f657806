"""Bad requests get vLLM's status codes and OpenAI error bodies; metrics parse with
prometheus_client; a client that disconnects mid-stream frees its simulated request."""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from servesim.serve.metrics import REQUEST_LATENCY_BUCKETS_S, TTFT_BUCKETS_S

AUTH = {"Authorization": "Bearer sk-test"}


def post(url: str, body, path: str = "/v1/completions", headers=AUTH) -> httpx.Response:
    kw = {"content": body} if isinstance(body, (str, bytes)) else {"json": body}
    return httpx.post(url + path, headers=headers, timeout=30, **kw)


def metrics(url: str) -> dict:
    """{(sample name, labels without model/engine): value}."""
    out = {}
    for fam in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=10).text):
        for s in fam.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("model_name", "engine")))
            out[(s.name, labels)] = s.value
    return out


@pytest.mark.parametrize("body, status, message", [
    ('{"prompt": "x", ', 400, "Invalid JSON"),
    ({"prompt": "x", "max_tokens": -1}, 400, "max_tokens must be at least 1, got -1."),
    ({"prompt": "x", "max_tokens": 10**9}, 400, "'max_tokens' or 'max_completion_tokens' is too large: 1000000000."),
    ({"prompt": "word " * 5000}, 400, "This model's maximum context length is 4096 tokens. However, your request has"),
    ({"prompt": "x", "max_tokens": 5, "min_tokens": 9}, 400, "min_tokens must be less than or equal to max_tokens=5"),
    ({"prompt": "x", "max_tokens": "many"}, 400, "max_tokens"),
    ({"prompt": "x", "model": "nope"}, 404, "The model `nope` does not exist."),
])
def test_bad_requests(server, body, status, message):
    r = post(server, body)
    assert r.status_code == status
    err = r.json()["error"]
    assert message in err["message"] and err["code"] == status
    assert err["type"] == {400: "BadRequestError", 404: "NotFoundError"}[status]


def test_missing_bearer_token_is_401_on_v1_only(server):
    r = post(server, {"prompt": "x"}, headers={})
    assert r.status_code == 401 and r.json() == {"error": "Unauthorized"}
    assert httpx.get(server + "/health").status_code == 200
    assert httpx.get(server + "/version").json()["version"]


def test_metrics_count_what_was_served(server):
    before = metrics(server)
    for n in (3, 4):
        assert post(server, {"prompt": "hello", "max_tokens": n, "ignore_eos": True}).status_code == 200
    after = metrics(server)

    def delta(name, labels=()):
        return after.get((name, labels), 0) - before.get((name, labels), 0)

    assert delta("vllm:generation_tokens_total") == 7
    assert delta("vllm:prompt_tokens_total") == 2 * 2  # BOS + "hello"
    assert delta("vllm:request_success_total", (("finished_reason", "length"),)) == 2
    assert delta("vllm:time_to_first_token_seconds_count") == 2
    assert delta("vllm:inter_token_latency_seconds_count") == 2 + 3
    assert delta("vllm:request_time_per_output_token_seconds_count") == 2
    buckets = sorted(float(dict(k[1])["le"]) for k in after if k[0] == "vllm:time_to_first_token_seconds_bucket")
    assert buckets[:-1] == TTFT_BUCKETS_S and buckets[-1] == float("inf")
    e2e = sorted(float(dict(k[1])["le"]) for k in after if k[0] == "vllm:e2e_request_latency_seconds_bucket")
    assert e2e[:-1] == REQUEST_LATENCY_BUCKETS_S
    assert after[("vllm:num_requests_running", ())] == 0 and after[("vllm:kv_cache_usage_perc", ())] == 0


def test_disconnect_mid_stream_frees_the_request(server):
    before = metrics(server)
    body = {"prompt": "tell me a long story", "max_tokens": 3000, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", server + "/v1/completions", json=body, headers=AUTH, timeout=30) as r:
        lines = r.iter_lines()
        got = [next(lines) for _ in range(10)]
        assert all(x.startswith("data: ") or x == "" for x in got)
        mid = metrics(server)
        assert mid[("vllm:num_requests_running", ())] == 1 and mid[("vllm:kv_cache_usage_perc", ())] > 0
    deadline = time.monotonic() + 10
    while True:
        after = metrics(server)
        if after[("vllm:num_requests_running", ())] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    abort = (("finished_reason", "abort"),)
    assert after[("vllm:request_success_total", abort)] - before.get(("vllm:request_success_total", abort), 0) == 1
    assert after[("vllm:num_requests_running", ())] == 0 and after[("vllm:num_requests_waiting", ())] == 0
    assert after[("vllm:kv_cache_usage_perc", ())] == 0  # its blocks are free (prefix-cached blocks count as free)


def test_disconnect_while_waiting_for_a_whole_completion_frees_it(server):
    before = metrics(server)
    abort = (("finished_reason", "abort"),)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server + "/v1/completions", headers=AUTH, timeout=0.5,
                   json={"prompt": "a long answer please", "max_tokens": 3000, "ignore_eos": True})
    deadline = time.monotonic() + 10
    while True:
        after = metrics(server)
        aborted = after[("vllm:request_success_total", abort)] - before.get(("vllm:request_success_total", abort), 0)
        if aborted or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert aborted == 1 and after[("vllm:num_requests_running", ())] == 0
