"""vtc's next turns join keyed stretches as prompt-only steps (`replica/copy_join.py`): its
admission makes no lookup, so a turn computes its whole context again, its prompt's blocks
copies of those still cached; it joins where its registration then is stepping's at the step
vtc's mini-batch would admit it (held to `max_wait_tokens`). The results, step log, counters
and every registration are stepping's."""

from __future__ import annotations

import pytest

from servesim import load_scenario, simulate
from servesim.replica import copy_join, stretch_join
from servesim.replica.schedulers.vtc import VTCScheduler

from .helpers import SESSIONS, assert_same_steps, outcome, wrong_registrations
from .test_keyed_join import BUSY

VTC = ["workload.num_requests=400", "scheduler.name=vtc"]


@pytest.mark.parametrize("extra, min_joins, min_copies", [
    ([], 0.5, 0.3),
    (["replicas=2", "router.name=least-requests", "workload.arrival.rate_per_s=1"], 0.5, 0.2),
    (["scheduler.max_wait_tokens=3"], 0.5, 0.3),
    (["engine.gpu_memory_utilization=0.25"], 0.02, 0),  # (contexts evicted before the next turn: no copies)
    (BUSY[1:], 0.05, 0.02),  # (a queue most of the time: few stretches through finishes)
])
def test_vtc_next_turns_join_with_copies_exactly(extra, min_joins, min_copies, monkeypatch):
    joined, copies, refused, held = [], [], [], []
    hold = stretch_join._hold
    monkeypatch.setattr(stretch_join, "_hold", lambda st, joins, s2: hold(st, joins, s2) and not held.append(s2))
    stall_of = copy_join._copies_stall

    def counted(engine, st, req, n, s, pops):
        stall = stall_of(engine, st, req, n, s, pops)
        if stall is None:
            refused.append(req.id)
            return None

        def run(*args):
            stall(*args)
            joined.append(req.id)
            held = engine.kv._held[req.id]
            if held.dups:  # (its context cached: computed again, copies)
                copies.append(req.id)
        return run

    # Each keyed request registers up to the tokens it computed, no block past them (the plan
    # moved by each stall, `_stall_keyed`): read where the registrations are made
    wrong = wrong_registrations(monkeypatch)

    # What each admission registered: its copies and keyed positions (no result reads them:
    # vtc makes no lookup), as stepping's admission at the same step leaves them
    admitted = {}
    admit = VTCScheduler._admit

    def recorded(self, req, n, out):
        admit(self, req, n, out)
        held = self.kv._held[req.id]
        admitted[req.id] = (tuple(held.dups or ()), held.num_keyed, held.num_plain, tuple((p0, p1) for _, p0, p1 in held.segs))

    scheds = []
    init = VTCScheduler.__init__

    def kept(self, *args):
        init(self, *args)
        scheds.append(self)

    monkeypatch.setattr(copy_join, "_copies_stall", counted)
    monkeypatch.setattr(VTCScheduler, "__init__", kept)
    monkeypatch.setattr(VTCScheduler, "_admit", recorded)
    fast = simulate(load_scenario(SESSIONS, VTC + extra), keep_steps=True)
    fast_counters, fast_admitted = [dict(s.counters) for s in scheds], dict(admitted)
    n = len(joined)
    del scheds[:]
    admitted.clear()
    slow = simulate(load_scenario(SESSIONS, VTC + extra + ["engine.fast_forward=false"]), keep_steps=True)
    assert len(joined) == n  # (stepping joins nothing)
    assert not wrong, wrong[:10]
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert fast_counters == [dict(s.counters) for s in scheds]
    assert fast_admitted == admitted
    # (on main every such turn ended the stretch: none joined); some held to vtc's count first
    assert n > min_joins * len(fast.requests), (n, len(refused))
    assert len(copies) >= min_copies * len(fast.requests), len(copies)
    assert held and refused, (len(held), len(refused))
