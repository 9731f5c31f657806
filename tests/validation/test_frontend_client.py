"""The API-server front end, the closed-loop client options and the client's metrics (exact)."""

from __future__ import annotations

import pytest

from servesim import simulate
from servesim.errors import InputError
from servesim.replica.frontend import FrontEnd, FrontendConfig
from servesim.scenario import validate_scenario
from servesim.validation.run import client_metrics
from servesim.workload.request import Request, RequestState
from tests.workload.helpers import make


def test_frontend_is_a_serial_queue_plus_latency():
    fe = FrontEnd(FrontendConfig(request_s=0.002, prompt_token_s=1e-6, latency_s=0.01))
    # three requests at once: served one after the other (2 ms + 1 ms for 1000 tokens each)
    assert [fe.engine_arrival_s(0.0, 1000) for _ in range(3)] == pytest.approx([0.013, 0.016, 0.019])
    # after an idle gap the queue is empty again
    assert fe.engine_arrival_s(1.0, 0) == pytest.approx(1.012)


def test_frontend_profile_and_overrides():
    assert FrontendConfig().constants() == (0.0, 0.0, 0.0) and not FrontendConfig().active
    cfg = FrontendConfig(profile="vllm", latency_s=0.5)
    assert cfg.constants()[2] == 0.5 and cfg.active
    with pytest.raises(ValueError, match="unknown frontend profile 'nginx'; allowed: sglang, sglang@b200"):
        FrontendConfig(profile="nginx")


def _scenario(frontend: dict, users: int = 1, **arrival) -> dict:
    return {"model": "llama-3.1-8b", "gpu": "h100-sxm", "frontend": frontend,
            "workload": {"arrival": {"process": "closed", "users": users, "think_time_s": 0.0,
                                     "think_time_dist": "fixed", **arrival},
                         "lengths": {"prompt_tokens": 512, "output_tokens": 16}, "num_requests": 2 * users}}


def test_frontend_adds_to_client_ttft_not_to_tpot():
    base = simulate(validate_scenario(_scenario({})))
    slow = simulate(validate_scenario(_scenario({"latency_s": 0.05, "request_s": 0.01})))
    for a, b in zip(base.requests, slow.requests):
        assert b.first_token_s - b.arrival_s == pytest.approx(a.first_token_s - a.arrival_s + 0.06)
        assert b.finish_s - b.first_token_s == pytest.approx(a.finish_s - a.first_token_s)


def test_bad_frontend_value_is_one_input_error():
    with pytest.raises(InputError, match="frontend.latency_s"):
        validate_scenario(_scenario({"latency_s": -1}))


def test_ramp_up_spreads_the_first_requests():
    reqs = list(make({"arrival": {"process": "closed", "users": 4, "ramp_up_s": 2.0}, "num_requests": 8}).arrivals())
    assert [r.arrival_s for r in reqs] == [0.0, 0.5, 1.0, 1.5]


def test_warmup_requests_are_marked_and_left_out():
    reqs = list(make({"arrival": {"process": "closed", "users": 3, "warmup_requests": 2}, "num_requests": 8}).arrivals())
    assert [bool(r.extra.get("warmup")) for r in reqs] == [True, True, False]
    with pytest.raises(ValueError, match="does not apply to process 'poisson'"):
        make({"arrival": {"process": "poisson", "warmup_requests": 2}})


def _done(rid: int, ttft: float, e2e: float, n: int, warmup: bool = False) -> Request:
    r = Request(rid, 1.0, 10, n)
    r.state, r.first_token_s, r.finish_s, r.num_output_tokens = RequestState.FINISHED, 1.0 + ttft, 1.0 + e2e, n
    if warmup:
        r.extra["warmup"] = True
    return r


def test_client_metrics_are_means_after_warmup():
    reqs = [_done(0, 9.0, 99.0, 11, warmup=True), _done(1, 0.2, 1.2, 11), _done(2, 0.4, 2.4, 11)]
    ttft, tpot, n = client_metrics(reqs)
    assert (ttft, tpot, n) == (pytest.approx(0.3), pytest.approx(0.15), 2)
