"""A registration plan's runs by diagonal (`PlanRuns`, plan_runs.py): `plan_appends` over keys whose
ids are ranges keeps, per diagonal, the intervals of runs it registers instead of a set of run keys;
the checks it answers (a run listed twice, a joining turn's runs met by the plan) are a set's, and a
plan meeting keys without ranges falls back to the set of the same keys."""

from __future__ import annotations

import random

import pytest

from servesim import load_scenario, simulate
from servesim.replica import join_keys
from servesim.replica.block_keys import BlockKeys
from servesim.replica.kv_cache import KVCacheManager
from servesim.replica.plan_runs import PlanRuns, plan_meets
from servesim.replica.prefix_diagonals import diagonal_pieces
from servesim.workload.prefix import HashIds
from tests.cluster.helpers import SESSIONS, assert_same_steps, outcome
from tests.factories import make_request
from tests.replica.test_dead_groups import TIGHT
from tests.replica.test_plan_extended import _admitted

BS = 16


def _turn(rid: int, ids, prompt_blocks: int, output: int):
    req = make_request(rid, prompt_blocks * BS, output, hash_ids=ids, hash_block_tokens=BS)
    req.kv_block_keys = BlockKeys(ids, BS, BS)
    return req


def _items(kv: KVCacheManager, reqs, blocks: int) -> list:
    """Each request's registration of its next `blocks` blocks (decodes: plain blocks until registered)."""
    out = []
    for r in reqs:
        held = kv._held[r.id]
        held.num_plain += blocks
        out.append((r.kv_block_keys, held, held.num_keyed, held.num_keyed + blocks))
    return out


def test_a_plan_of_ranges_keeps_its_runs_by_diagonal_and_answers_as_a_set():
    hashes, follow = HashIds(BS), HashIds(BS, 1 << 48)
    first = [hashes.fresh(6) for _ in range(3)]
    reqs = [_turn(i, follow.extend(ids, 20 * BS), 6, 14 * BS) for i, ids in enumerate(first)]
    kv = KVCacheManager(200, BS)
    _admitted(kv, reqs)
    p = kv._prefix
    planned = p.plan_appends(_items(kv, reqs, 4))
    assert planned is not None and type(planned[1]) is PlanRuns
    runs_of = [r.kv_block_keys.run_keys.as_list() for r in reqs]
    every = {k for rk in runs_of for k in rk[6:10]}
    rng = random.Random(3)
    for _ in range(200):  # (random intervals of the three turns' keys: met exactly where the set meets them)
        j = rng.randrange(3)
        i0 = rng.randrange(20)
        i1 = rng.randrange(i0, 20) + 1
        keys = reqs[j].kv_block_keys
        assert plan_meets(planned, keys, runs_of[j][i0:i1], i0) == (not every.isdisjoint(runs_of[j][i0:i1]))
        # (the same keys from a tuple of the same ids: told against the plan's run keys)
        tup = BlockKeys(tuple(reqs[j].hash_ids), BS, BS)
        assert plan_meets(planned, tup, runs_of[j][i0:i1], i0) == (not every.isdisjoint(runs_of[j][i0:i1]))


def test_a_run_listed_twice_is_told_by_its_diagonal_whichever_turn_lists_it():
    hashes, follow = HashIds(BS), HashIds(BS, 1 << 48)
    ids = hashes.fresh(12)
    rec = PlanRuns(1)

    def add(ids, i0, i1):
        return rec.add(diagonal_pieces(ids, i0, i1))

    assert add(ids, 2, 6) and add(ids, 6, 8)
    assert not add(ids, 5, 7)  # (runs 5 and 6 are in)
    assert rec.meets(ids, 7, 9) and not rec.meets(ids, 8, 12)
    # a next turn's ids start with these: its first runs are the same keys, on the same diagonal
    nxt = follow.extend(ids, 20 * BS)
    assert rec.meets(nxt, 0, 3) and not rec.meets(nxt, 8, 20) and add(nxt, 8, 20) and not add(nxt, 12, 13)


def test_a_plan_meeting_keys_without_ranges_keeps_its_runs_as_a_set():
    hashes = HashIds(BS)
    a = _turn(0, hashes.fresh(12), 4, 8 * BS)
    tup = _turn(1, tuple(range(5000, 5012)), 4, 8 * BS)
    for order in ([a, tup], [tup, a]):
        kv = KVCacheManager(200, BS)
        _admitted(kv, [a, tup])
        planned = kv._prefix.plan_appends(_items(kv, order, 2))
        assert planned is not None and type(planned[1]) is set
        assert planned[1] == {k for r in (a, tup) for k in r.kv_block_keys.run_keys.as_list()[4:6]}


@pytest.mark.parametrize("extra", [["scheduler.name=vllm"], ["replicas=4", "router.name=least-requests", "workload.arrival.rate_per_s=4"]])
def test_sessions_with_plans_by_diagonal_give_steppings_results(extra, monkeypatch):
    """Next turns joining keyed stretches are checked against the stretch's plan by diagonal
    (counted), and the results and step log are stepping's."""
    told = []

    def counted(planned, keys, runs, i0):
        told.append(type(planned[1]) is PlanRuns)
        return plan_meets(planned, keys, runs, i0)

    monkeypatch.setattr(join_keys, "plan_meets", counted)
    fast = simulate(load_scenario(SESSIONS, TIGHT + extra), keep_steps=True)
    slow = simulate(load_scenario(SESSIONS, TIGHT + extra + ["engine.fast_forward=false"]), keep_steps=True)
    assert len(told) > 20 and all(told), (len(told), told.count(False))  # (the path ran)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
