"""Continuum's stretches run through the expiries of pins held before them
(`FastForward.through_timers`, `ContinuumScheduler.stretch_timers`, `replica/policy_stops.py`):
with nothing waiting, the `schedule` of the first step starting at or after a pin's deadline
expires it; a stretch fires that expiry at that step (at a next turn's join, or among its late
finishes when applied, in stepping's order of frees) instead of ending there. The results are
those of stepping, step log included."""

from __future__ import annotations

from pathlib import Path

import pytest

from servesim import load_scenario, simulate
from servesim.replica import policy_stops
from servesim.replica.schedulers.continuum import ContinuumScheduler

from .helpers import assert_same_steps, outcome

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SESSIONS = ["scheduler.name=continuum", "workload.num_requests=300"]
BUSY = ["scheduler.name=continuum", "workload.num_requests=400", "workload.arrival.rate_per_s=2",
        "workload.sessions.think_time_s=1"]


def run_both(sets: list[str], monkeypatch) -> tuple:
    """(fast-forwarded, stepped) results of `examples/sessions.yaml` with `sets`, and the pins
    the fast run expired inside stretches: at a join, and when a stretch was applied."""
    at_join, late = [], []
    fire = ContinuumScheduler.fire_timers
    before_join, late_timers = policy_stops.fire_before_join, policy_stops.late_timers
    where = []

    def counted_fire(self, keys):
        (at_join if where[-1] == "join" else late).extend(keys)
        fire(self, keys)

    def counted_join(sched, st):
        where.append("join")
        before_join(sched, st)
        where.append("late")

    monkeypatch.setattr(ContinuumScheduler, "fire_timers", counted_fire)
    monkeypatch.setattr(policy_stops, "fire_before_join", counted_join)
    monkeypatch.setattr(policy_stops, "late_timers", lambda st, pins: (where.append("late"), late_timers(st, pins))[1])
    fast = simulate(load_scenario(str(EXAMPLES / "sessions.yaml"), sets), keep_steps=True)
    n_join, n_late = len(at_join), len(late)
    slow = simulate(load_scenario(str(EXAMPLES / "sessions.yaml"), sets + ["engine.fast_forward=false"]),
                    keep_steps=True)
    assert (len(at_join), len(late)) == (n_join, n_late)  # (stepping expires every pin in `schedule`)
    return fast, slow, n_join, n_late


@pytest.mark.parametrize("extra", [[], ["replicas=2", "router.name=least-requests", "workload.arrival.rate_per_s=1"]])
def test_pins_expire_inside_stretches_exactly(extra, monkeypatch):
    """Sessions' think time (mean 15 s) against the 2 s TTL: most pins expire while other
    conversations decode. Their expiries now fire inside the stretch: most at a next turn's
    join (which then finds its previous turn's blocks in the free queue), the rest when the
    stretch is applied; the step log's KV use and every request's times are stepping's."""
    fast, slow, at_join, late = run_both(SESSIONS + extra, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    n = len(fast.requests)
    assert at_join + late > 0.6 * n, (at_join, late)  # (1 replica: 183 + 23 of 300; 2 replicas: 22 + 221)
    assert min(at_join, late) > 0.05 * n, (at_join, late)


def test_expiries_among_pinning_finishes_exactly(monkeypatch):
    """Busy conversations with a short TTL: pins made before a stretch expire inside it among
    finishes that pin (processed late, their own pins' timers fired among them) and next turns
    that join."""
    fast, slow, at_join, late = run_both(BUSY + ["scheduler.ttl_s=0.3"], monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert at_join + late > 0.25 * len(fast.requests), (at_join, late)  # (36 + 77 of 400)


def test_fewer_stretches_than_stepping_stops_at_expiries(monkeypatch):
    """The stretches a sessions run starts: a pin's expiry no longer ends one (with the hook
    answering None, as before, every expiry bounds the stretch: more stretches, same results)."""
    from servesim.replica.engine import Engine

    starts = []
    start = Engine._start_step
    monkeypatch.setattr(Engine, "_start_step", lambda self, now_s: (starts.append(now_s), start(self, now_s))[1])
    through = simulate(load_scenario(str(EXAMPLES / "sessions.yaml"), SESSIONS), keep_steps=True)
    n_through = len(starts)
    monkeypatch.setattr(ContinuumScheduler, "stretch_timers", lambda self: None)
    bounded = simulate(load_scenario(str(EXAMPLES / "sessions.yaml"), SESSIONS), keep_steps=True)
    n_bounded = len(starts) - n_through
    assert outcome(through) == outcome(bounded)
    assert_same_steps(through, bounded)
    assert n_through < 0.6 * n_bounded, (n_through, n_bounded)  # (132 against 338)


def test_a_pin_sharing_a_block_bounds_the_stretch():
    """`stretch_timers` lists a pin whose blocks only it holds (it frees them all at its
    expiry), and leaves a pin sharing a prefix block with a running request as the bound: its
    expiry frees what the order of the other frees decides."""
    from servesim.replica.kv_cache import block_keys
    from tests.factories import make_engine, make_request

    _, sched, kv, _, _ = make_engine(num_blocks=200, scheduler="continuum", max_num_batched_tokens=256)
    a, b, c = make_request(0, 64, 4), make_request(1, 64, 4), make_request(2, 64, 4)
    a.hash_ids, b.hash_ids, c.hash_ids = [1, 2, 3, 4], [1, 2, 9, 10], [5, 6, 7, 8]
    a.session_id, b.session_id, c.session_id = 1, 2, 3
    for r in (a, b, c):
        r.kv_block_keys = block_keys(r, kv.block_size, False)
        sched.add_request(r, 0.0)
    sched.schedule(0.0)
    assert sched.stretch_timers() is None  # (no pin)
    for r in (a, c):
        r.num_output_tokens = r.output_len
        sched.finish(r, 1.0)  # (pinned until 3.0: a shares its first blocks with b, running)
    first_s, through, fired, due = sched.stretch_timers()
    assert first_s == 1.0 + sched.params.ttl_s
    assert through == [(3.0, ("session", 3), kv.num_blocks_of(c.id))]
    assert (fired, due) == ([], None)
