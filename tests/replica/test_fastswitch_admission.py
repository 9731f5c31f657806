"""FastSwitch's admission stretches: with one tenant held (the walk in arrival order) and its
counting deferred, a waiting head that cannot get blocks waits until a finish, which admits
in arrival order inside the stretch (`finish_admits`), capped at the next priority refresh,
exactly as stepping does."""

from __future__ import annotations

import pytest

from servesim.perf.build import build_perf_model
from servesim.replica.schedulers.fastswitch import FastSwitchScheduler
from tests.factories import ToyPerf, assert_same_run
from tests.replica.test_admission_stretch import FIELDS, overload, run


@pytest.fixture(scope="module")
def llama():
    return build_perf_model("llama-3.1-8b", "h100-sxm")


# priority_update_interval 7: stretches capped at refreshes every few steps
@pytest.mark.parametrize("params", [{}, {"priority_update_interval": 7}, {"overlap_swap": False}])
@pytest.mark.parametrize("seed,num_blocks", [(1, 1000), (3, 300), (4, 200)])
@pytest.mark.parametrize("perf_name", ["toy", "llama"])
def test_finishes_admit_inside_stretches_exactly(params, seed, num_blocks, perf_name, llama, monkeypatch):
    perf = ToyPerf() if perf_name == "toy" else llama
    # the snapshot each `schedule` orders by (taken at a refresh step, or after a stretch
    # that crossed one): a stretch with requests waiting stops before a refresh
    snaps: dict[int, dict] = {}
    orig = FastSwitchScheduler.schedule
    monkeypatch.setattr(FastSwitchScheduler, "schedule", lambda self, now_s: (
        orig(self, now_s), snaps.setdefault(id(self), {}).__setitem__(self.num_engine_steps, dict(self._snapshot)))[0])
    a_reqs, b_reqs = overload(seed), overload(seed)
    a = run(a_reqs, True, num_blocks, perf, "fastswitch", params)
    b = run(b_reqs, False, num_blocks, perf, "fastswitch", params)
    assert_same_run(a, b, a_reqs, b_reqs, num_blocks, FIELDS)
    fast, slow = snaps[id(a.scheduler)], snaps[id(b.scheduler)]
    assert {step: slow[step] for step in fast} == fast
    assert a.scheduler.counters == b.scheduler.counters
    assert a.num_finish_admissions > 0.1 * len(a_reqs)
    # (before: 7-38 % of these runs' steps, every stretch ending at a finish with requests waiting)
    assert a.num_fast_forwarded_steps > 0.2 * a.num_steps


def test_two_tenants_keep_stepping_at_finishes():
    # counters order the walk: admissions inside stretches only while one tenant is held (a
    # few, near the end), still exact
    a_reqs, b_reqs = overload(1), overload(1)
    for reqs in (a_reqs, b_reqs):
        for req in reqs[::3]:
            req.tenant = "b"
    a = run(a_reqs, True, 600, ToyPerf(), "fastswitch")
    b = run(b_reqs, False, 600, ToyPerf(), "fastswitch")
    assert_same_run(a, b, a_reqs, b_reqs, 600, FIELDS)
    assert a.num_finish_admissions < 0.05 * len(a_reqs)
