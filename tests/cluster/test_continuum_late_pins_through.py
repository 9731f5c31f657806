"""Continuum's stretches run through the expiries of pins made inside them (`policy_stops.late_pins`,
`ContinuumScheduler.stretch_timers(reqs)`): a running call whose blocks only it holds finishes
inside a stretch and pins them (processed late, at the stretch's end); the `schedule` of the
first step starting at or after its deadline expires the pin, nothing waiting, and frees exactly
those blocks and the ones it grew there. The stretch fires that expiry at that step when it is
applied, after the finish, instead of ending before it (`stop_at_finish_timer`, still the bound
for a pin sharing a block). The results are stepping's, step log included."""

from __future__ import annotations

from pathlib import Path

import pytest

from servesim import load_scenario, simulate
from servesim.replica import policy_stops
from servesim.replica.engine import Engine
from servesim.replica.schedulers.continuum import ContinuumScheduler

from .helpers import assert_same_steps, outcome

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SESSIONS = ["scheduler.name=continuum", "workload.num_requests=300"]
TWO = ["replicas=2", "router.name=least-requests", "workload.arrival.rate_per_s=1"]


def run(sets: list[str], monkeypatch) -> tuple:
    """(result, stretches started, pins made inside a stretch and expired inside it) of
    `examples/sessions.yaml` with `sets`."""
    starts, fired = [], []
    start = Engine._start_step
    late_timers = policy_stops.late_timers

    def counted(st):
        if st.timers is not None and len(st.timers) > 4:
            fired.extend(key for t, key, _ in policy_stops.late_pins(st, st.k - 2)[1] if st.timer_step(t) < st.k)
        return late_timers(st)

    monkeypatch.setattr(Engine, "_start_step", lambda self, now_s: (starts.append(now_s), start(self, now_s))[1])
    monkeypatch.setattr(policy_stops, "late_timers", counted)
    result = simulate(load_scenario(str(EXAMPLES / "sessions.yaml"), sets), keep_steps=True)
    return result, len(starts), len(fired)


@pytest.mark.parametrize("extra", [[], TWO])
def test_pins_made_inside_a_stretch_expire_inside_it_exactly(extra, monkeypatch):
    """Sessions (think time 15 s on average, TTL 2 s): a turn that finishes inside a stretch
    pins its blocks, and the stretch now runs on through the pin's expiry. Stepping's results
    and step log (its KV use: the blocks freed at the expiry's step)."""
    fast, _, fired = run(SESSIONS + extra, monkeypatch)
    slow = simulate(load_scenario(str(EXAMPLES / "sessions.yaml"), SESSIONS + extra + ["engine.fast_forward=false"]),
                    keep_steps=True)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert fired > 0.25 * len(fast.requests), fired


def test_without_them_the_first_pin_made_bounds_the_stretch(monkeypatch):
    """`stretch_timers` without its list of running calls (every pin made inside a stretch
    bounds it at its timer, as before): the same results, more stretches."""
    through, n_through, fired = run(SESSIONS, monkeypatch)
    timers = ContinuumScheduler.stretch_timers

    def without_late(self, reqs=()):
        out = timers(self)
        return out[:4] if out is not None else None

    monkeypatch.setattr(ContinuumScheduler, "stretch_timers", without_late)
    bounded, n_bounded, none = run(SESSIONS, monkeypatch)
    assert outcome(through) == outcome(bounded)
    assert_same_steps(through, bounded)
    assert none == 0 and fired > 0
    assert n_through < 0.9 * n_bounded, (n_through, n_bounded)


def test_a_running_call_sharing_a_block_is_not_listed():
    """`stretch_timers(reqs)` lists the running calls whose blocks only they hold, with those
    blocks (their pins' expiries free exactly them and the ones they grow), and leaves out one
    sharing a prefix block with a pinned call (its pin would free what the other frees decide)
    and a standalone request (its finish pins nothing)."""
    from servesim.replica.kv_cache import block_keys
    from tests.factories import make_engine, make_request

    _, sched, kv, _, _ = make_engine(num_blocks=200, scheduler="continuum", max_num_batched_tokens=512)
    a, b, c, d = (make_request(i, 64, 4) for i in range(4))
    a.hash_ids, b.hash_ids, c.hash_ids, d.hash_ids = [1, 2, 3, 4], [1, 2, 9, 10], [5, 6, 7, 8], [11, 12, 13, 14]
    a.session_id, b.session_id, c.session_id = 1, 2, 3
    for r in (a, b, c, d):
        r.kv_block_keys = block_keys(r, kv.block_size, False)
        sched.add_request(r, 0.0)
    sched.schedule(0.0)
    a.num_output_tokens = a.output_len
    sched.finish(a, 1.0)  # (pinned until 3.0, sharing its first blocks with b, running)
    first_s, through, fired, due, late, bs = sched.stretch_timers([b, c, d])
    assert first_s == 1.0 + sched.params.ttl_s and through == []
    assert late == {c.id: (("session", 3), kv.num_blocks_of(c.id))}
    assert bs == kv.block_size


@pytest.mark.parametrize("extra", [[], TWO])
def test_chunked_turns_join_a_stretch_through_every_pin_exactly(extra, monkeypatch):
    """A next turn whose prompt the budget chunks joins a stretch that runs through every pin's
    expiry (`policy_stops.all_through`): its chunk steps are priced past those expiries, whose
    frees are the stretch's own. A turn that pins keeps its later chunks' blocks at its finish
    (`apply_rests`, `Stretch.blocks_added`). Stepping's results and step log."""
    from servesim.replica import keyed_join as kj

    chunked = []
    join_in_chunks = kj.join_in_chunks

    def counted(engine, st, *args, **kw):
        if st.kept is not None:
            chunked.append(st.k)
        return join_in_chunks(engine, st, *args, **kw)

    monkeypatch.setattr(kj, "join_in_chunks", counted)
    fast = simulate(load_scenario(str(EXAMPLES / "sessions.yaml"), SESSIONS + extra), keep_steps=True)
    slow = simulate(load_scenario(str(EXAMPLES / "sessions.yaml"), SESSIONS + extra + ["engine.fast_forward=false"]),
                    keep_steps=True)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert len(chunked) >= 3, chunked
