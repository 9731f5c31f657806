"""Autellix's next turns whose prompts take two chunks of the token budget join the stretch in
flight (`keyed_join`, `max_join_chunks` 1): the first chunk at the join step, the rest at the next,
whole in the budget the decodes leave, so the place the level sort gives the turn among the
decodes changes no one's tokens there. A turn arriving inside such a turn's first chunk step waits
to its rest's step and joins beside it. The results, step log included, are stepping's."""

from __future__ import annotations

import pytest

from servesim import load_scenario, simulate
from servesim.replica import keyed_join

from .helpers import assert_same_steps, beside_rests, outcome
from .test_keyed_chunk_join import BUSY, SESSIONS
from .test_keyed_join import BUSY as DEFAULT_BUDGET

AUTELLIX = BUSY + ["scheduler.name=autellix"]


@pytest.mark.parametrize("extra", [[], ["replicas=4", "router.name=least-requests", "workload.arrival.rate_per_s=6"]])
def test_autellix_turns_join_in_two_chunks_exactly(extra, monkeypatch):
    joined, before, middle = [], [], []
    join_in_chunks = keyed_join.join_in_chunks

    def counted(engine, st, req, chunk_fn, chunks, *args):
        sched = engine.scheduler
        joined.append(req.id)
        middle.extend(chunks[1:])  # (chunks between the first and the rest: none may join)
        key = sched.key(req)
        if any(sched.key(r) > key for r in sched.running if r is not req):
            before.append(req.id)  # (its level sorts it before a running call at the rest's step)
        return join_in_chunks(engine, st, req, chunk_fn, chunks, *args)

    monkeypatch.setattr(keyed_join, "join_in_chunks", counted)
    fast = simulate(load_scenario(SESSIONS, AUTELLIX + extra), keep_steps=True)
    n, m = len(joined), len(before)
    slow = simulate(load_scenario(SESSIONS, AUTELLIX + extra + ["engine.fast_forward=false"]), keep_steps=True)
    assert len(joined) == n  # (stepping joins nothing)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert not middle, middle
    # (on main autellix's chunked turns ended the stretch: none joined)
    assert n > 0.05 * len(fast.requests), n
    assert m > 0, (m, n)  # some sorted before a decode, where the rest still runs as stepping runs it


def test_autellix_turn_arriving_inside_a_joined_turns_first_chunk_joins_beside_its_rest(monkeypatch):
    """The one step a turn joined with two chunks spends the budget on (its first chunk) admits
    nothing, so a turn arriving inside it waits to the rest's step (`chains_after_rest`): one
    step-end pass adds its waiting time there (the time from its arrival to that step's end),
    which the join adds as the same one sum, and `joins_last` checks its promotion on it; then it
    joins beside the rest, whole or with its first chunk. Before, it ended the stretch."""
    beside = beside_rests(monkeypatch)
    sets = DEFAULT_BUDGET + ["scheduler.name=autellix", "replicas=4", "router.name=least-requests",
                             "workload.arrival.rate_per_s=8"]
    fast = simulate(load_scenario(SESSIONS, sets), keep_steps=True)
    n = dict(beside)
    slow = simulate(load_scenario(SESSIONS, sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert beside == n  # (stepping joins nothing)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert n["whole"] >= 5 and n["chunks"] >= 2, n  # (10 and 5 of 500)
