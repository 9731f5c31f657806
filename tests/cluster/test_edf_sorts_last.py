"""EDF with no deadline (static keys, every key (inf, arrival, id)) answers `_sorts_last` (a
next turn's `joins_last`, `repeats_chunk`) from the batch's (arrival, id) in C: each answer is
the generic one (a `key` call per running request), and next turns join as before, with
stepping's results."""

from __future__ import annotations

from servesim import load_scenario, simulate
from servesim.replica.schedulers.edf import EDFScheduler
from servesim.replica.schedulers.priority import KeyedScheduler

from .helpers import assert_same_steps, keyed_joins, outcome
from .test_keyed_join import BUSY, SESSIONS


def test_edf_sorts_last_by_arrival_as_by_its_keys(monkeypatch):
    answers = []  # (the override's answer, the generic one) per call with static keys
    sorts_last = EDFScheduler._sorts_last

    def checked(self, req):
        last = sorts_last(self, req)
        if self.static_keys:
            answers.append((last, KeyedScheduler._sorts_last(self, req)))
        return last

    monkeypatch.setattr(EDFScheduler, "_sorts_last", checked)
    joins = keyed_joins(monkeypatch)
    sets = BUSY + ["scheduler.name=edf", "replicas=2", "router.name=least-requests", "workload.arrival.rate_per_s=4"]
    fast = simulate(load_scenario(SESSIONS, sets), keep_steps=True)
    n = len(joins)
    slow = simulate(load_scenario(SESSIONS, sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert all(a == b for a, b in answers), [x for x in answers if x[0] != x[1]][:5]
    assert len(answers) > 0.3 * len(fast.requests) and any(a for a, _ in answers), len(answers)
    assert n > 0.15 * len(fast.requests), n
