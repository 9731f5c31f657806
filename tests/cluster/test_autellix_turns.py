"""Autellix on conversations: stretches run through finishes told at their times
(`finish_noticed`), end before a step two calls leave together (`reorders_running`), and next
turns join them (`keyed_join`, `AutellixScheduler.joins_last`); the results are stepping's."""

from __future__ import annotations

import pytest

from servesim import load_scenario, simulate
from servesim.replica import fast_forward, policy_stops
from servesim.replica.schedulers.autellix import AutellixScheduler

from .helpers import assert_same_steps, outcome
from .test_keyed_join import BUSY, SESSIONS

AUTELLIX = BUSY + ["scheduler.name=autellix"]
TWO = ["replicas=2", "router.name=least-requests", "workload.arrival.rate_per_s=4"]


def counting(monkeypatch) -> dict:
    """Count, in the fast-forwarded run, the finishes told inside a stretch, the turns that
    joined one, the stretches ended before a shared departure, and the joins refused for a
    promotion at the join step."""
    counts = {"told": 0, "joins": 0, "ended": 0, "promotes": 0}
    told, keyed_join = AutellixScheduler.finish_noticed, fast_forward.keyed_join
    ended, joins_last = policy_stops.end_before_shared_departure, AutellixScheduler.joins_last

    def count_told(self, req, now_s):
        counts["told"] += 1
        return told(self, req, now_s)

    def count_joins(engine, st, now_s):
        joined = keyed_join(engine, st, now_s)
        counts["joins"] += joined
        return joined

    def count_ended(st, k_safe):
        k = st.k
        ended(st, k_safe)
        counts["ended"] += st.k < k

    def count_refused(self, req, now_s):
        last = joins_last(self, req, now_s)
        if not last and not self.swapped and req.output_len > 1 and self._calls_held.get(self.program(req)) == 1:
            counts["promotes"] += 1  # (refused for the pass's promotion alone)
        return last

    monkeypatch.setattr(AutellixScheduler, "finish_noticed", count_told)
    monkeypatch.setattr(fast_forward, "keyed_join", count_joins)
    monkeypatch.setattr(policy_stops, "end_before_shared_departure", count_ended)
    monkeypatch.setattr(AutellixScheduler, "joins_last", count_refused)
    return counts


def run_both(sets: list[str], monkeypatch) -> tuple:
    counts = counting(monkeypatch)
    fast = simulate(load_scenario(SESSIONS, sets), keep_steps=True)
    seen = dict(counts)
    slow = simulate(load_scenario(SESSIONS, sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert counts == seen  # (stepping tells, joins and ends nothing)
    return fast, slow, seen


@pytest.mark.parametrize("extra", [[], TWO])
def test_autellix_turns_join_stretches_through_finishes_exactly(extra, monkeypatch):
    """Busy conversations: finishes inside stretches are told at their times (a next turn's key
    reads its session's service up to date), stretches end before steps two turns leave together
    (stepping finishes them in that step's level order: the next turns' ids follow it), and
    next turns join the stretch in flight. On main every finish and every arrival ended a
    stretch (none told, none joined), and its stretches listed a step's finishes in their first
    step's order: these runs differed from stepping there."""
    fast, slow, counts = run_both(AUTELLIX + extra, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert fast.num_fast_forwarded_steps > 0.5 * sum(len(r.steps.start_s) for r in fast.replicas)
    n = len(fast.requests)
    # (1 replica: 106 joins, 2: 264, of 500)
    assert counts["joins"] > 0.15 * n, counts
    assert counts["told"] > 0.2 * n, counts
    assert counts["ended"] > 0, counts


def test_autellix_turn_that_a_promotion_would_rekey_ends_the_stretch(monkeypatch):
    """A low starvation ratio: the pass at the end of the step a turn arrives in promotes its
    session (its waiting time over the ratio times its service), so the turn does not join
    (`joins_last`); the others still do, and the results are stepping's."""
    fast, slow, counts = run_both(AUTELLIX + ["scheduler.starvation_ratio=0.002"], monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert counts["promotes"] > 0 and counts["joins"] > 0, counts


def test_autellix_programs_still_end_stretches_at_finishes(monkeypatch):
    """A program's calls run in parallel: a later call's key reads its program's service, of
    which the stretch credits the calls still running only at its end. So with a program call
    running the stretch stops at finishes (nothing told), and no call of a program joins."""
    counts = counting(monkeypatch)
    sets = ["workload.num_requests=300", "scheduler.name=autellix"]
    path = str(SESSIONS).replace("sessions.yaml", "agent-programs.yaml")
    fast = simulate(load_scenario(path, sets), keep_steps=True)
    slow = simulate(load_scenario(path, sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert outcome(fast) == outcome(slow)
    assert fast.num_fast_forwarded_steps > 0
    assert counts["told"] == 0 and counts["joins"] == 0, counts


def test_crash_reroutes_in_arrival_order_as_stepping(monkeypatch):
    """examples/cluster-faults.yaml with autellix: a crashed replica's requests are routed again
    in arrival order, not in autellix's running order, which a stretch holds as its first step's
    (stepping: the last step's level sort); power-of-two's draws follow that order. On main,
    replica 1's crash at 107.4 s rerouted 401 and 402 in opposite orders and 91 of 500 requests
    (finish, first token or replica) differed from stepping."""
    from pathlib import Path

    path = str(Path(__file__).resolve().parents[2] / "examples" / "cluster-faults.yaml")
    sets = ["workload.num_requests=500", "scheduler.name=autellix"]
    fast = simulate(load_scenario(path, sets), keep_steps=True)
    slow = simulate(load_scenario(path, sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert fast.summary()["cluster"]["num_rerouted"] >= 2  # (a crash held requests)
    assert fast.num_fast_forwarded_steps > 0.5 * fast.summary()["num_steps"]
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
