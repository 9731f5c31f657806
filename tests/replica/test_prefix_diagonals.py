"""The prefix index's record of its keys by diagonal (`DiagonalRecord`, prefix_diagonals.py).

A key's diagonal is its id less its run, one number along a range of consecutive ids at
consecutive runs; the index counts its keys per diagonal with the hull of their runs, so that a registration's
check that its keys are absent is answered range by range. The tests check the record against
the index itself through the random life of `test_kv_cache_equivalence.py` (ids as ranges, every
answer compared with the per-block reference), that a conversation's next turn registers its new
message without a probe per key, and that whole simulations give the same results without it.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from servesim import load_scenario, simulate
from servesim.replica.block_keys import RUN_KEY_BASE, BlockKeys, fold
from servesim.replica.kv_cache import KVCacheManager
from servesim.replica.prefix_diagonals import DiagonalRecord
from servesim.workload.prefix import HashIds
from tests.cluster.helpers import SESSIONS, assert_same_steps, keep_kv_caches, outcome
from tests.replica.test_dead_groups import TIGHT
from tests.factories import make_request
from tests.replica.test_kv_cache_equivalence import _run

BS = 16


def check_record(kv: KVCacheManager, pairs: list, rng: random.Random, answered: Counter) -> None:
    """The record holds exactly the index's keys (count per diagonal, each key's run in its
    diagonal's hull, untracked ones counted), and its answers are right: runs it says are
    absent are not indexed (random intervals of the requests' keys)."""
    p = kv._prefix
    index = p._index
    if p._run_len:
        r = p._run_len
        # (a key's id and run, unpacked: fold(id) * RUN_KEY_BASE + position, fold its own inverse)
        runs_of = {k: (fold(k // RUN_KEY_BASE), (k % RUN_KEY_BASE) // r) for k in index}
        by_diag = Counter(h - i for h, i in runs_of.values())
        assert {d: x[0] for d, x in p._diags.items()} == dict(by_diag)
        for h, i in runs_of.values():
            x = p._diags[h - i]
            assert x[1] <= i < x[2]
    assert p._untracked == 0 and (p._diags or not index)
    for pair in rng.sample(pairs, min(3, len(pairs))):
        keys = pair.new.kv_block_keys
        runs = keys.run_keys.as_list()
        i0 = rng.randrange(len(runs))
        i1 = rng.randrange(i0, len(runs)) + 1
        if p._absent(keys, i0, i1):
            assert index.keys().isdisjoint(runs[i0:i1])
            answered["absent"] += 1
        else:
            answered["probed"] += 1


@pytest.mark.parametrize("H", [16, 32, 512])
@pytest.mark.parametrize("seed", [1, 2])
def test_the_record_holds_the_index_keys_and_answers_through_a_random_life(H, seed):
    rng, answered = random.Random(seed), Counter()
    counts = _run(seed, H, num_blocks=100, steps=1500, ranges=True,
                  more_checks=lambda kv, pairs: check_record(kv, pairs, rng, answered))
    assert counts["hits"] > 20 and counts["preempt"] > 20 and counts["bulk keys"] > 0, counts
    # (both kinds of answer were given: intervals the record clears, and others it leaves to the probe)
    assert answered["absent"] > 20 and answered["probed"] > 100, answered


class NoProbes(dict):
    """An index that fails a probe of many keys at once (`dict.keys().isdisjoint`)."""

    def keys(self):
        raise AssertionError("probed key by key")


def _turn(rid: int, ids, prompt_blocks: int):
    req = make_request(rid, prompt_blocks * BS, 4, hash_ids=ids, hash_block_tokens=BS)
    req.kv_block_keys = BlockKeys(ids, BS, BS)
    return req


def _admit(kv: KVCacheManager, req) -> int:
    hits = kv.get_computed_blocks(req)
    n = req.num_tokens - len(hits) * BS
    assert kv.allocate_slots(req, n, hits)
    req.num_computed_tokens = req.num_tokens
    return len(hits)


def test_a_next_turn_registers_its_new_message_without_probing_its_keys():
    kv = KVCacheManager(100, BS)
    p = kv._prefix
    hashes, follow = HashIds(BS), HashIds(BS, 1 << 48)
    other = _turn(0, hashes.fresh(20), 20)  # (another conversation, cached beside)
    first_ids = hashes.fresh(12)
    t1 = _turn(1, first_ids, 12)
    assert _admit(kv, other) == 0 and _admit(kv, t1) == 0
    kv.free(1)
    p._index = NoProbes(p._index)
    before = p.num_absent
    t2 = _turn(2, follow.extend(first_ids, 30 * BS), 30)  # its context, then 18 blocks of new ids
    assert kv._prefix.unindexed(t2.kv_block_keys, 12, 29) is not None  # (a keyed join's check)
    assert _admit(kv, t2) == 12  # (hits its context, registers its new message)
    assert p.num_absent > before and sum(len(g.runs) for g in set(p._index.values())) == 20 + 12 + 18
    assert p._diags and p._untracked == 0


def test_keys_without_ranges_are_untracked_and_probed():
    kv = KVCacheManager(100, BS)
    p = kv._prefix
    t = _turn(1, tuple(range(100, 110)), 10)  # (a trace's ids: a tuple)
    _admit(kv, t)
    assert p._untracked == 10 and not p._absent(_turn(2, HashIds(BS).fresh(5), 5).kv_block_keys, 0, 5)
    kv.free(1)
    p.dead_capacity = 0  # (a group evicted whole is dropped, its keys untracked)
    _admit(kv, _turn(3, tuple(range(200, 300)), 100))  # (evicts the first)
    assert p._untracked == 100 and len(p._index) == 100


def _simulate(sets: list[str], monkeypatch, record: bool) -> tuple:
    with monkeypatch.context() as m:
        caches = keep_kv_caches(m)
        if not record:
            m.setattr(DiagonalRecord, "_absent", lambda self, keys, i0, i1: False)
        result = simulate(load_scenario(SESSIONS, sets), keep_steps=True)
    return result, sum(kv._prefix.num_absent for kv in caches)


@pytest.mark.parametrize("extra", [["scheduler.name=vllm"], ["scheduler.name=sarathi"], ["scheduler.name=andes", "engine.swap_space_gb=0.5"],
                                   ["replicas=4", "router.name=least-requests", "workload.arrival.rate_per_s=4"]])
def test_sessions_give_the_same_results_with_checks_answered_by_the_record(extra, monkeypatch):
    fast, answered = _simulate(TIGHT + extra, monkeypatch, True)
    probed, none = _simulate(TIGHT + extra, monkeypatch, False)
    assert answered > 300 and none == 0  # (the path ran)
    assert outcome(fast) == outcome(probed)
    assert [r.num_cached_tokens_total for r in fast.requests] == [r.num_cached_tokens_total for r in probed.requests]
    assert_same_steps(fast, probed)
    # (sarathi computes a context again without a lookup: no hits, its registrations checked all the same)
    assert fast.prefix_hits == probed.prefix_hits and (fast.prefix_hits[1] > 0 or "sarathi" in extra[0])
    assert fast.num_fast_forwarded_steps == probed.num_fast_forwarded_steps > 0
