"""The prefix index's keys by diagonal (`DiagonalRecord`, prefix_diagonals.py).

A key's diagonal is its id less its run, one number along a range of consecutive ids at
consecutive runs; the index keeps a registration's keys as pieces [first run, end run, group] per
diagonal rather than one dict entry each. The tests check the record against the groups' runs
through the random life of `test_kv_cache_equivalence.py` (ids as ranges, every answer compared
with the per-block reference, every read of the record compared with a dict of the same keys),
that a conversation's next turn registers its new message without a dict insert or probe, that
keys without ranges go to the dict, and that whole simulations give the same results with the
record's answers and with a plain dict's.
"""

from __future__ import annotations

import random
from collections import Counter
from itertools import repeat

import pytest

from servesim import load_scenario, simulate
from servesim.replica.block_keys import BlockKeys, RunKeys
from servesim.replica.kv_cache import KVCacheManager
from servesim.replica.prefix_diagonals import DiagonalRecord, diagonal_at, diagonal_pieces
from servesim.workload.prefix import HashIds
from tests.cluster.helpers import SESSIONS, assert_same_steps, keep_kv_caches, outcome
from tests.replica.test_dead_groups import TIGHT
from tests.factories import make_request
from tests.replica.test_kv_cache_equivalence import _run

BS = 16


def check_record(kv: KVCacheManager, pairs: list, rng: random.Random, answered: Counter) -> None:
    """The record holds exactly the groups' keys (each group's pieces cover its runs in order,
    pieces of a diagonal disjoint, nothing in the dict: every id is a range), and its reads are a
    dict's of those keys: which group a run maps to, a stretch's groups, whether none is indexed
    (random intervals of the requests' keys)."""
    p = kv._prefix
    assert not p._index
    groups = {x[2] for pieces in p._diags.values() for x in pieces}
    for g in groups:
        assert sum(x[1] - x[0] for d, x in g.diags) == g.num_runs and all(d is not None for d, _ in g.diags)
        assert g.runs == []  # (keys recorded by diagonal are not listed)
    for pieces in p._diags.values():
        spans = sorted((x[0], x[1]) for x in pieces)
        assert all(a < b for a, b in spans) and all(b <= a2 for (_, b), (a2, _) in zip(spans, spans[1:]))
    index = {}
    for g in groups:
        index.update(zip(p.group_runs(g), repeat(g)))
    assert p.indexed() == index
    for pair in rng.sample(pairs, min(3, len(pairs))):
        keys = pair.new.kv_block_keys
        runs = keys.run_keys.as_list()
        i0 = rng.randrange(len(runs))
        i1 = rng.randrange(i0, len(runs)) + 1
        assert p._groups(keys, i0, i1) == [index.get(k) for k in runs[i0:i1]]
        assert p._group_at(keys, i0) is index.get(runs[i0]) and p._group_of_key(runs[i1 - 1]) is index.get(runs[i1 - 1])
        absent = p._absent(keys, runs[i0:i1], i0, i1)
        assert absent == index.keys().isdisjoint(runs[i0:i1])
        answered["absent" if absent else "indexed"] += 1
        g = index.get(runs[i0])
        if g is not None:  # the leading runs in g's, read from its pieces (`_runs_in`): those the dict maps to g
            m = next((t for t, k in enumerate(runs[i0:i1]) if index.get(k) is not g), i1 - i0)
            assert p._runs_in(g, keys, i0, i1) == m
            answered["runs in group"] += m > 1


@pytest.mark.parametrize("H", [16, 32, 512])
@pytest.mark.parametrize("seed", [1, 2])
def test_the_record_holds_the_index_keys_and_answers_through_a_random_life(H, seed):
    rng, answered = random.Random(seed), Counter()
    counts = _run(seed, H, num_blocks=100, steps=1500, ranges=True,
                  more_checks=lambda kv, pairs: check_record(kv, pairs, rng, answered))
    assert counts["hits"] > 20 and counts["preempt"] > 20 and counts["bulk keys"] > 0, counts
    # (both answers were given: intervals with no key indexed, and others with some)
    assert answered["absent"] > 20 and answered["indexed"] > 100 and answered["runs in group"] > 20, answered


class NoProbes(dict):
    """An index dict that fails a probe of many keys at once (`dict.keys().isdisjoint`), an
    insert or a lookup: keys with ranges never reach it."""

    def keys(self):
        raise AssertionError("probed key by key")

    def update(self, *a):
        raise AssertionError("inserted key by key")

    def get(self, *a):
        raise AssertionError("looked up in the dict")


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


def test_a_next_turn_registers_its_new_message_without_a_dict_insert_or_probe():
    kv = KVCacheManager(100, BS)
    p = kv._prefix
    hashes, follow = HashIds(BS), HashIds(BS, 1 << 48)
    other = _turn(0, hashes.fresh(20), 20)  # (another conversation, cached beside)
    first_ids = hashes.fresh(12)
    t1 = _turn(1, first_ids, 12)
    assert _admit(kv, other) == 0 and _admit(kv, t1) == 0
    kv.free(1)
    assert not p._index  # (both contexts recorded by diagonal: a piece each)
    assert [len(x) for x in p._diags.values()] == [1, 1]
    p._index = NoProbes()
    before = p.num_absent
    t2 = _turn(2, follow.extend(first_ids, 30 * BS), 30)  # its context, then 18 blocks of new ids
    assert kv._prefix.unindexed(t2.kv_block_keys, 12, 29) is not None  # (a keyed join's check)
    assert _admit(kv, t2) == 12  # (hits its context, registers its new message)
    assert p.num_absent > before and sum(g.num_runs for g in set(p.indexed().values())) == 20 + 12 + 18
    # (the context's piece, and the new message's on the follow-up range's diagonal, in its group)
    g = kv._held[2].segs[-1][0]
    assert [x[1][:2] for x in g.diags] == [[0, 12], [12, 30]] and len(p._diags) == 3


def test_keys_without_ranges_go_to_the_dict_and_meet_those_with_ranges():
    kv = KVCacheManager(100, BS)
    p = kv._prefix
    t = _turn(1, tuple(range(100, 110)), 10)  # (a trace's ids: a tuple)
    _admit(kv, t)
    assert len(p._index) == 10 and not p._diags and p.indexed() == p._index
    # the same ids as ranges are the same keys: found in the dict (a hit), and absent past them
    same = _turn(2, HashIds(BS, 100).fresh(12), 12).kv_block_keys
    runs = same.run_keys.as_list()
    assert not p._absent(same, runs[:10], 0, 10) and p._absent(same, runs[10:], 10, 12)
    assert p._group_at(same, 3) is p._index[runs[3]] and p._groups(same, 8, 12)[2:] == [None, None]
    # keys with ranges recorded by diagonal are found by a tuple's keys (unpacked back to id and run)
    u = _turn(3, HashIds(BS, 500).fresh(6), 6)
    _admit(kv, u)
    assert len(p._index) == 10 and len(p._diags) == 1
    tup = BlockKeys(tuple(range(500, 506)), BS, BS)
    g = p._group_at(u.kv_block_keys, 0)
    assert p._groups(tup, 0, 6) == [g] * 6 and not p._absent(tup, tup.run_keys.as_list(), 0, 6)
    kv.free(1)
    kv.free(3)
    p.dead_capacity = 0  # (a group evicted whole is dropped: its keys leave the dict, or the record)
    _admit(kv, _turn(4, tuple(range(200, 300)), 100))  # (evicts both)
    assert len(p._index) == 100 and not p._diags


def _simulate(sets: list[str], monkeypatch, record: bool) -> tuple:
    with monkeypatch.context() as m:
        caches = keep_kv_caches(m)
        if not record:
            m.setattr(DiagonalRecord, "_tracked", lambda self, keys: None)  # (every key in the dict)
        result = simulate(load_scenario(SESSIONS, sets), keep_steps=True)
    return result, sum(kv._prefix.num_absent for kv in caches)


# (sarathi keeps its keys only where a router reads the caches: `Scheduler.looks_up_prefixes`)
@pytest.mark.parametrize("extra", [["scheduler.name=vllm"], ["scheduler.name=sarathi", "router.name=llm-d"],
                                   ["scheduler.name=andes", "engine.swap_space_gb=0.5"],
                                   ["replicas=4", "router.name=least-requests", "workload.arrival.rate_per_s=4"]])
def test_sessions_give_the_same_results_with_keys_recorded_by_diagonal(extra, monkeypatch):
    fast, answered = _simulate(TIGHT + extra, monkeypatch, True)
    probed, none = _simulate(TIGHT + extra, monkeypatch, False)
    assert answered > 300 and none == 0  # (the path ran)
    assert outcome(fast) == outcome(probed)
    assert [r.num_cached_tokens_total for r in fast.requests] == [r.num_cached_tokens_total for r in probed.requests]
    assert_same_steps(fast, probed)
    # (sarathi computes a context again without a lookup: no hits, its registrations checked all the same)
    assert fast.prefix_hits == probed.prefix_hits and (fast.prefix_hits[1] > 0 or "sarathi" in extra[0])
    assert fast.num_fast_forwarded_steps == probed.num_fast_forwarded_steps > 0


@pytest.mark.parametrize("extra", [["scheduler.name=vllm"], ["replicas=4", "router.name=least-requests", "workload.arrival.rate_per_s=4"]])
def test_sessions_with_keys_recorded_by_diagonal_give_steppings_results(extra, monkeypatch):
    """Fast-forward against stepping, both with the record: the keys of every registration go
    in as pieces (counted), none key by key into the dict, no request's run-key list is built
    (its runs go by range, `_runs_from`), and the results and step log agree."""
    calls = Counter()
    insert = DiagonalRecord._insert
    build = RunKeys._build
    monkeypatch.setattr(RunKeys, "_build", lambda self: calls.update(["built"]) or build(self))

    def counted(self, keys, runs, i0, i1, g, pieces=None):
        calls["tracked" if self._tracked(keys) is not None else "dict"] += i1 - i0
        if pieces is not None:  # (a plan's: its pieces found once, when planned)
            assert pieces == diagonal_pieces(keys._ids, i0, i1)
            calls["planned"] += i1 - i0
        return insert(self, keys, runs, i0, i1, g, pieces)

    monkeypatch.setattr(DiagonalRecord, "_insert", counted)
    fast = simulate(load_scenario(SESSIONS, TIGHT + extra), keep_steps=True)
    by_fast = dict(calls)
    slow = simulate(load_scenario(SESSIONS, TIGHT + extra + ["engine.fast_forward=false"]), keep_steps=True)
    assert by_fast.get("tracked", 0) > 10_000 and "dict" not in calls and "built" not in calls, calls  # (in both)
    assert calls["tracked"] == 2 * by_fast["tracked"]  # (stepping registers the same keys)
    assert by_fast.get("planned", 0) > 1_000, by_fast  # (a stretch's plan hands its pieces to `_insert`)
    assert fast.num_fast_forwarded_steps > 0 and slow.num_fast_forwarded_steps == 0
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)


def test_one_runs_diagonal_is_its_piece_s():
    """`diagonal_at(ids, i)` (the look-up of one run, `_group_at`'s) is the diagonal of the one
    piece `diagonal_pieces(ids, i, i + 1)` gives, in every range, first and last runs included."""
    from servesim.workload.prefix import IdRanges

    rng = random.Random(7)
    for _ in range(2000):
        bounds = [0]
        for _ in range(rng.randint(1, 5)):
            bounds.append(bounds[-1] + rng.randint(1, 6))
        ids = IdRanges.of_ranges(tuple(rng.randint(0, 1000) for _ in bounds[:-1]), tuple(bounds))
        for i in range(bounds[-1]):
            assert diagonal_at(ids, i) == diagonal_pieces(ids, i, i + 1)[0][0]
