"""The front end's per-request time spread (FrontendConfig.time_cv): its distribution, its seed,
its default (off: runs unchanged) and how validation switches it on per (GPU, engine)."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from servesim import simulate
from servesim.errors import InputError
from servesim.replica.frontend import FrontEnd, FrontendConfig
from servesim.scenario import validate_scenario
from servesim.validation import silicon
from servesim.validation.silicon import ClientOptions, row_scenario
from tests.validation.silicon_rows import silicon_row


def test_spread_keeps_the_mean_and_has_the_cv():
    fe = FrontEnd(FrontendConfig(latency_s=0.1, time_cv=0.5), np.random.default_rng(7))
    # requests 1 s apart: no queue, so each delay is the latency times that request's factor
    delays = [fe.engine_arrival_s(float(i), 0) - i for i in range(20_000)]
    mean = statistics.fmean(delays)
    assert mean == pytest.approx(0.1, rel=0.02)
    assert statistics.pstdev(delays) / mean == pytest.approx(0.5, rel=0.05)
    assert min(delays) > 0  # gamma: never a negative time


def test_spread_scales_the_serial_service_too():
    fe = FrontEnd(FrontendConfig(request_s=0.01, time_cv=1.0), np.random.default_rng(3))
    ends = [fe.engine_arrival_s(0.0, 0) for _ in range(5)]  # all at once: served one after the other
    gaps = np.diff([0.0, *ends])
    assert len(set(np.round(gaps, 12))) == 5 and all(g > 0 for g in gaps)  # each request its own time


def test_spread_needs_a_generator():
    with pytest.raises(ValueError, match="time_cv > 0 needs a seeded generator"):
        FrontEnd(FrontendConfig(latency_s=0.1, time_cv=0.5))


def _scenario(time_cv: float | None, seed: int = 0) -> dict:
    frontend = {"latency_s": 0.05, "request_s": 0.01, **({} if time_cv is None else {"time_cv": time_cv})}
    return {"seed": seed, "model": "llama-3.1-8b", "gpu": "h100-sxm", "frontend": frontend,
            "workload": {"arrival": {"process": "closed", "users": 8, "think_time_s": 0.0, "think_time_dist": "fixed"},
                         "lengths": {"prompt_tokens": 512, "output_tokens": 16}, "num_requests": 32}}


def _ttfts(data: dict) -> list[float]:
    return [r.first_token_s - r.arrival_s for r in simulate(validate_scenario(data)).requests]


def test_spread_is_seeded_and_off_by_default():
    assert _ttfts(_scenario(0.0)) == _ttfts(_scenario(None))  # the default draws nothing
    spread = _ttfts(_scenario(1.0))
    assert spread == _ttfts(_scenario(1.0))  # same seed: identical
    assert spread != _ttfts(_scenario(1.0, seed=1)) and spread != _ttfts(_scenario(0.0))


def test_bad_spread_is_one_input_error():
    with pytest.raises(InputError, match="frontend.time_cv"):
        validate_scenario(_scenario(-0.5))


def test_validation_plays_the_fitted_spread_per_gpu_and_engine(monkeypatch):
    sglang_h200 = silicon_row(1, backend="sglang", backend_version="0.5.9", system="h200_sxm")
    assert row_scenario(sglang_h200).frontend.time_cv == 0.0  # nothing shipped: every row as before
    monkeypatch.setitem(silicon.FRONTEND_TIME_CV, ("h200_sxm", "sglang"), 1.0)
    assert row_scenario(sglang_h200).frontend.time_cv == 1.0
    assert row_scenario(silicon_row(2)).frontend.time_cv == 0.0  # vLLM H100: no entry, off
    assert row_scenario(silicon_row(2), ClientOptions(frontend_time_cv=0.3)).frontend.time_cv == 0.3
    assert row_scenario(sglang_h200, ClientOptions(frontend=False)).frontend.time_cv == 0.0
