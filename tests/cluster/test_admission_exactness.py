"""Admission stretches (`replica/admission_stretch.py`) in a cluster: with a router that reads
every field of every replica's view at every arrival (KV blocks in use while departed requests
have released theirs inside a stretch, running and waiting counts while the queue head joins
it), fast-forward gives exactly the results of stepping, and admissions inside stretches happen."""

from __future__ import annotations

import pytest

import servesim.replica.admission_stretch as admission

from .helpers import assert_same_steps, outcome, reads_everything, run  # noqa: F401  (fixture)


@pytest.mark.parametrize("scheduler", ["vllm", "priority", "edf", "hygen", "batchllm", "continuum", "trtllm"])
@pytest.mark.parametrize("rate", [40, 80])
def test_admissions_inside_stretches_are_exact_with_a_state_reading_router(scheduler, rate, reads_everything,
                                                                           monkeypatch):
    admitted = []
    join = admission._join
    monkeypatch.setattr(admission, "_join", lambda engine, st, s, n, joins, now_s: (
        admitted.extend(joins), join(engine, st, s, n, joins, now_s)))
    sets = [f"router.name={reads_everything}", f"scheduler.name={scheduler}", f"workload.arrival.rate_per_s={rate}"]
    fast = run(sets)
    slow_admitted = len(admitted)
    slow = run(sets, fast_forward=False)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert len(admitted) == slow_admitted > 0.1 * len(fast.requests)  # many finishes admitted inside stretches
