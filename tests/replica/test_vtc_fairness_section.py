"""The fairness summary section: VTC service per tenant and window, Jain's index."""

from __future__ import annotations

import pytest

from servesim.metrics.sections.fairness import jain_index
from servesim.scenario import validate_scenario
from servesim.simulation import simulate


def _summary(scheduler: dict, tenants: dict | None) -> dict:
    workload = {"arrival": {"rate_per_s": 5}, "lengths": {"prompt_tokens": 100, "output_tokens": 20},
                "num_requests": 40}
    if tenants:
        workload["attributes"] = {"tenants": tenants}
    return simulate(validate_scenario({"scheduler": scheduler, "workload": workload})).summary()


def test_jain_index():
    assert jain_index([1, 1, 1]) == pytest.approx(1.0)
    assert jain_index([1, 0, 0, 0]) == pytest.approx(0.25)
    assert jain_index([]) is None


def test_service_per_tenant_and_windows_add_up():
    s = _summary({"name": "vtc", "input_price": 1.0, "output_price": 3.0}, {"a": 0.5, "b": 0.5})
    f = s["fairness"]
    assert (f["input_price"], f["output_price"]) == (1.0, 3.0)  # the scheduler's prices
    total_requests = 0
    for name, t in f["tenants"].items():
        assert t["service"] == 100 * t["requests"] + 3 * 20 * t["requests"]  # every request finished
        assert sum(f["windows"][name]) == pytest.approx(t["service"])
        total_requests += t["requests"]
    assert total_requests == 40
    assert 0.5 < f["jain_index"] <= 1.0
    assert f["max_cumulative_gap"] >= 0


def test_absent_with_one_tenant_and_default_prices_otherwise():
    assert "fairness" not in _summary({"name": "vllm"}, None)
    f = _summary({"name": "vllm"}, {"a": 0.5, "b": 0.5})["fairness"]
    assert (f["input_price"], f["output_price"]) == (1.0, 2.0)
