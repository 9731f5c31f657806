"""Continuum's stretches run on through finishes that pin (`ContinuumScheduler.fast_forward`,
`FastForward.finish_timer_s`): the finished turn keeps its blocks, its pin's timer bounds the
stretch, and the results are those of stepping."""

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
    (their time before the stretch's end) and its stretches the first pin's timer shortened."""
    late, timed = [], []
    finish = ContinuumScheduler.finish
    stop = policy_stops.stop_at_timer  # (the first pin's timer not run through: `policy_stops.late_pins`)

    def counted_finish(self, req, now_s):
        if req.finish_s is not None and req.finish_s < now_s and self.pins_on_finish(req):
            late.append(req.id)
        finish(self, req, now_s)

    def counted_stop(st, due_s):
        k = st.k
        stop(st, due_s)
        if st.k < k:
            timed.append(k - st.k)

    monkeypatch.setattr(ContinuumScheduler, "finish", counted_finish)
    monkeypatch.setattr(policy_stops, "stop_at_timer", counted_stop)
    fast = simulate(load_scenario(str(path), sets), keep_steps=True)
    n_late, n_timed = len(late), len(timed)
    slow = simulate(load_scenario(str(path), sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert (len(late), len(timed)) == (n_late, n_timed)  # (stepping processes every finish at its step)
    return fast, slow, n_late, n_timed


@pytest.mark.parametrize("extra", [[], ["replicas=2", "router.name=least-requests", "workload.arrival.rate_per_s=4"]])
def test_stretches_run_through_pinning_finishes_exactly(extra, monkeypatch):
    fast, slow, late, _ = run_both(EXAMPLES / "sessions.yaml", BUSY + extra, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert late > 0.3 * len(fast.requests), late  # turns that pinned inside a stretch


def test_the_first_pins_timer_ends_the_stretch_exactly(monkeypatch):
    """A short TTL: pins made inside a stretch expire within it unless it stops at the step
    that starts at or after the first one's deadline (that step's `schedule` frees them); since
    cont32 only the first that is not run through (a joined turn's, or one sharing a block):
    here none is listed as run through (`stretch_timers` without its list), so each bounds it."""
    timers = ContinuumScheduler.stretch_timers

    def without_late(self, reqs=()):
        out = timers(self)
        return out[:4] if out is not None else None

    monkeypatch.setattr(ContinuumScheduler, "stretch_timers", without_late)
    fast, slow, late, timed = run_both(EXAMPLES / "sessions.yaml", BUSY + ["scheduler.ttl_s=0.3"], monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert late > 0.3 * len(fast.requests), late
    assert timed > 10, timed  # stretches the timer shortened


def test_programs_calls_pin_through_with_their_siblings_apart(monkeypatch):
    """Agent programs run parallel calls of one program: a stretch goes through pinning
    finishes only while no two running calls share a program (a sibling's next step would
    release the pin) and no running call's program holds one."""
    sets = ["scheduler.name=continuum", "workload.num_requests=300", "workload.arrival.rate_per_s=2"]
    fast, slow, late, _ = run_both(EXAMPLES / "agent-programs.yaml", sets, monkeypatch)
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
    fast, slow, late, _ = run_both(EXAMPLES / "sessions.yaml", BUSY + extra, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert len(joins) > 0.1 * len(fast.requests), len(joins)
