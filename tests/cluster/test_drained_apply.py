"""Stretches that arrivals joined and every request left, applied by `replica/drained_apply.py`."""

from __future__ import annotations

from pathlib import Path

import pytest

from servesim import load_scenario, simulate

from .helpers import assert_same_steps, outcome

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("router", ["least-requests", "power-of-two"])
def test_drained_stretches_are_applied_as_the_general_path_does(router, monkeypatch):
    """At 8 replicas an arrival at a replica whose lone stretch runs joins it, and most such
    stretches end with every request gone: `apply_drained` applies them (more than 10 % of the
    requests' stretches), and the requests, their token runs and the step logs are those of
    the general `_apply_stretch` and of stepping one by one."""
    from servesim.replica import fast_forward
    calls = []
    drained = fast_forward.apply_drained
    monkeypatch.setattr(fast_forward, "apply_drained", lambda engine, st: calls.append(1) or drained(engine, st))
    path = str(ROOT / "examples/cluster-azure-conv.yaml")
    sets = ["replicas=8", "workload.trace.end_s=600", f"router.name={router}"]
    fast = simulate(load_scenario(path, sets), keep_steps=True)
    n = len(calls)
    assert n > 0.1 * len(fast.requests), n
    monkeypatch.setattr(fast_forward, "is_drained", lambda st: False)  # the general path only
    general = simulate(load_scenario(path, sets), keep_steps=True)
    assert len(calls) == n  # (the general path ran every stretch)
    assert outcome(fast) == outcome(general)
    assert_same_steps(fast, general)
    slow = simulate(load_scenario(path, sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
