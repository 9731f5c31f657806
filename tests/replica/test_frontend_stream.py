"""An API server that streams every token (`frontend.output_token_s`): token work and admissions
in one serial FIFO process, and the token-rate ceiling that follows (exact)."""

from __future__ import annotations

import pytest

from servesim import simulate
from servesim.replica.frontend import FrontEnd, FrontendConfig
from servesim.scenario import validate_scenario


def test_tokens_take_the_serial_process_in_order():
    fe = FrontEnd(FrontendConfig(request_s=0.002, output_token_s=1e-4, latency_s=0.01))
    assert fe.engine_arrival_s(0.0, 100) == pytest.approx(0.012)  # admitted 0-2 ms, at the engine 10 ms later
    assert fe.deliver_s(0.001, 30) == pytest.approx(0.005)  # 30 tokens wait for the admission: 2-5 ms
    assert fe.deliver_s(0.004, 10) == pytest.approx(0.006)  # behind them
    assert fe.deliver_s(1.0, 10) == pytest.approx(1.001)  # an idle process starts at once
    assert FrontEnd(FrontendConfig()).deliver_s(0.5, 1000) == 0.5  # no token cost: tokens reach the client as made


def test_profile_token_cost_and_activity():
    assert FrontendConfig().token_s() == 0.0 and not FrontendConfig(output_token_s=0.0).active
    assert FrontendConfig(output_token_s=1e-4).active
    assert FrontendConfig(profile="vllm").token_s() == 0.0  # profiles without the key stream for free
    assert FrontendConfig(profile="trtllm@h100-sxm@1.0.0rc3").token_s() > 0


def test_admissions_and_tokens_share_one_fifo():
    fe = FrontEnd(FrontendConfig(request_s=0.001, output_token_s=1e-3))
    assert fe.deliver_s(0.0, 5) == pytest.approx(0.005)  # a step's 5 tokens: busy until 5 ms
    assert fe.engine_arrival_s(0.001, 10) == pytest.approx(0.006)  # an arrival queues behind them
    assert fe.deliver_s(0.004, 3) == pytest.approx(0.009)  # tokens made meanwhile wait for its admission
    assert fe.engine_arrival_s(0.002, 10) == pytest.approx(0.010)  # the next arrival behind those


def _scenario(frontend: dict, users: int = 16) -> dict:
    return {"model": "llama-3.1-8b", "gpu": "h100-sxm", "frontend": frontend,
            "workload": {"arrival": {"process": "closed", "users": users, "think_time_s": 0.0, "think_time_dist": "fixed"},
                         "lengths": {"prompt_tokens": 256, "output_tokens": 64}, "num_requests": 8 * users}}


def _token_rate(result) -> float:
    """Output tokens a second the client received, from the first send to the last token."""
    reqs = result.requests
    return sum(r.num_output_tokens for r in reqs) / (max(r.finish_s for r in reqs) - min(r.arrival_s for r in reqs))


def test_streaming_cost_caps_the_token_rate_and_delays_first_tokens():
    free = simulate(validate_scenario(_scenario({})))
    assert free.num_fast_forwarded_steps > 0  # (the same replica without a token cost fast-forwards)
    cost = 1e-3  # 1,000 tokens a second at most, below what 16 users of an H100 decode
    capped = simulate(validate_scenario(_scenario({"output_token_s": cost})))
    assert _token_rate(free) > 1.2 / cost
    assert 0.9 / cost < _token_rate(capped) <= 1.0 / cost
    assert capped.num_fast_forwarded_steps == 0  # every step's tokens pass the process
    mean = lambda res, f: sum(map(f, res.requests)) / len(res.requests)  # noqa: E731
    # admissions queue behind the streamed tokens: first tokens come later
    assert mean(capped, lambda r: r.first_token_s - r.arrival_s) > mean(free, lambda r: r.first_token_s - r.arrival_s) + 0.01
    assert all(r.arrival_s < r.first_token_s <= r.finish_s for r in capped.requests)


def test_zero_token_cost_changes_nothing():
    a = simulate(validate_scenario(_scenario({"request_s": 0.001})))
    b = simulate(validate_scenario(_scenario({"request_s": 0.001, "output_token_s": 0.0})))
    assert [(r.first_token_s, r.finish_s) for r in a.requests] == [(r.first_token_s, r.finish_s) for r in b.requests]
