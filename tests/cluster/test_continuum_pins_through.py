"""Continuum's stretches run on through finishes that pin (`ContinuumScheduler.fast_forward`,
`FastForward.finish_timer_s`): the finished turn keeps its blocks and its pin's timer fires
inside the stretch where the blocks are its own (`policy_stops.late_timers`), or bounds it
where another request shares one (`policy_stops.stop_at_shared_pin`); the results are those
of stepping."""

from __future__ import annotations

from pathlib import Path

import pytest

from servesim import load_scenario, simulate
from servesim.replica import policy_stops
from servesim.replica.schedulers.continuum import ContinuumScheduler

from .helpers import assert_same_steps, keyed_joins, outcome

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# Busy conversations with short think times: turns finish while others decode, and next turns
# arrive while their previous turn's pin is held
BUSY = ["scheduler.name=continuum", "workload.num_requests=400", "workload.arrival.rate_per_s=2",
        "workload.sessions.think_time_s=1"]


def run_both(path: Path, sets: list[str], monkeypatch) -> tuple:
    """(fast-forwarded, stepped) results, the fast run's finishes processed late that pinned
    (their time before the stretch's end), its stretches a pin sharing a block shortened, and
    the pins set inside a stretch whose timers it fired among its finishes."""
    late, timed, fired = [], [], []
    finish = ContinuumScheduler.finish
    stop, late_timers = policy_stops.stop_at_shared_pin, policy_stops.late_timers

    def counted_finish(self, req, now_s):
        if req.finish_s is not None and req.finish_s < now_s and self.pins_on_finish(req):
            late.append(req.id)
        finish(self, req, now_s)

    def counted_stop(st, kv):
        k = st.k
        stop(st, kv)
        if st.k < k:
            timed.append(k - st.k)

    def counted_late(st, pins):
        fired.extend(pins)
        return late_timers(st, pins)

    monkeypatch.setattr(ContinuumScheduler, "finish", counted_finish)
    monkeypatch.setattr(policy_stops, "stop_at_shared_pin", counted_stop)
    monkeypatch.setattr(policy_stops, "late_timers", counted_late)
    fast = simulate(load_scenario(str(path), sets), keep_steps=True)
    counts = len(late), len(timed), len(fired)
    slow = simulate(load_scenario(str(path), sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert (len(late), len(timed), len(fired)) == counts  # (stepping processes every finish at its step)
    return fast, slow, *counts


@pytest.mark.parametrize("extra", [[], ["replicas=2", "router.name=least-requests", "workload.arrival.rate_per_s=4"]])
def test_stretches_run_through_pinning_finishes_exactly(extra, monkeypatch):
    fast, slow, late, _, _ = run_both(EXAMPLES / "sessions.yaml", BUSY + extra, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert late > 0.3 * len(fast.requests), late  # turns that pinned inside a stretch


def test_pins_set_inside_a_stretch_expire_inside_it_exactly(monkeypatch):
    """A short TTL: pins made inside a stretch expire within it. A conversation's blocks are
    its own, so the stretch runs on and fires each expiry among its finishes when applied
    (before, the first one's deadline ended it); the step log's KV use is stepping's."""
    fast, slow, late, timed, fired = run_both(EXAMPLES / "sessions.yaml", BUSY + ["scheduler.ttl_s=0.3"],
                                              monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert late > 0.3 * len(fast.requests), late
    assert timed == 0 and fired > 0.1 * len(fast.requests), (timed, fired)


def test_a_pin_on_a_shared_prompt_ends_the_stretch_exactly(monkeypatch):
    """Conversations that start with one system prompt: a pin holds blocks other requests
    hold too, and its expiry frees what their frees before it leave. Such a timer bounds the
    stretch (the step starting at or after it is stepping's)."""
    sets = BUSY + ["scheduler.ttl_s=0.3", "workload.shared_prefix.tokens=256"]
    fast, slow, late, timed, _ = run_both(EXAMPLES / "sessions.yaml", sets, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert late > 0.3 * len(fast.requests) and timed > 10, (late, timed)


def test_programs_calls_pin_through_with_their_siblings_apart(monkeypatch):
    """Agent programs run parallel calls of one program: a stretch goes through pinning
    finishes only while no two running calls share a program (a sibling's next step would
    release the pin) and no running call's program holds one."""
    sets = ["scheduler.name=continuum", "workload.num_requests=300", "workload.arrival.rate_per_s=2"]
    fast, slow, late, _, _ = run_both(EXAMPLES / "agent-programs.yaml", sets, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert late > 0.05 * len(fast.requests), late


def test_a_running_siblings_program_keeps_the_stretch_at_finishes():
    from servesim.replica.schedulers.outputs import REPEAT_THROUGH, SchedulerOutput
    from tests.factories import make_engine, make_request

    sched = make_engine(num_blocks=200, scheduler="continuum")[1]
    a, b = make_request(0, 32, 20), make_request(1, 32, 20)
    a.program_id = b.program_id = 7
    for r in (a, b):
        sched.add_request(r, 0.0)
    out = sched.schedule(0.0)
    assert sched._jobs_apart() is False  # (one program's two calls)
    ff = sched.fast_forward(out)
    assert not ff.through_finishes and ff is not REPEAT_THROUGH
    b.program_id = 8
    sched.first_entry_s[("program", 8)] = 0.0
    assert sched._jobs_apart() is True
    ff = sched.fast_forward(SchedulerOutput(scheduled=[(a, 1), (b, 1)]))
    assert ff.through_finishes and ff.finish_timer_s == sched.params.ttl_s
    sched.pins[("program", 8)] = (99, 5.0)  # (a pin of a running call's program: its finish would free it)
    assert sched._jobs_apart() is False


@pytest.mark.parametrize("extra", [[], ["scheduler.ttl_s=20"],
                                   ["replicas=2", "router.name=least-requests", "workload.arrival.rate_per_s=4"]])
def test_next_turns_join_the_stretch_in_flight_exactly(extra, monkeypatch):
    """A next turn (or a new conversation's first) joins the stretch as vLLM's do
    (`replica/keyed_join.py`) when its conversation holds no pin and has no turn running, and
    no pin's timer is due at the join step; the rest end it as before. With a long TTL most
    next turns find their pin held and end the stretch."""
    joins = keyed_joins(monkeypatch)
    fast, slow, late, _, _ = run_both(EXAMPLES / "sessions.yaml", BUSY + extra, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert len(joins) > 0.1 * len(fast.requests), len(joins)
