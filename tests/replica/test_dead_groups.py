"""Dead groups (`PrefixRegistration.retire`): a prefix group whose last cached block the free queue
evicts keeps its keys indexed, up to `dead_capacity` keys per cache (the oldest dead dropped first),
and a conversation's next turn registering that context fills the same group's slots again instead
of inserting its keys again. A key indexed to a slot that is not cached answers every lookup as an
unindexed key: every hit, free count and result is the same as when the group is dropped at its
eviction (capacity 0, the behaviour before), which the tests compare with the per-block reference
cache and with whole simulations."""

from __future__ import annotations


import pytest

from servesim import load_scenario, simulate
from servesim.replica import kv_cache
from servesim.replica.block_keys import BlockKeys
from servesim.replica.kv_cache import KVCacheManager
from tests.cluster.helpers import SESSIONS, assert_same_steps, keep_kv_caches, outcome
from tests.factories import make_request
from tests.replica.kv_reference import ReferenceKVCache
from tests.replica.kv_reference import block_keys as reference_keys
from tests.replica.test_kv_cache_equivalence import _run

BS = 16


def _turn(rid: int, ids: list[int], prompt_blocks: int):
    """A request (ours and the reference's) whose prompt is `prompt_blocks` blocks of `ids`, one id a block."""
    new = make_request(rid, prompt_blocks * BS, 4, hash_ids=tuple(ids), hash_block_tokens=BS)
    ref = make_request(rid, prompt_blocks * BS, 4, hash_ids=tuple(ids), hash_block_tokens=BS)
    new.kv_block_keys = BlockKeys(ids, BS, BS)
    ref.kv_block_keys = reference_keys(ref, BS)
    return new, ref


def _admit(new_kv, ref_kv, new, ref, n: int | None = None) -> int:
    """Admit with hits and (a first chunk of) n tokens in both caches; returns the blocks hit."""
    hn, hr = new_kv.get_computed_blocks(new), ref_kv.get_computed_blocks(ref)
    assert len(hn) == len(hr)
    n = new.num_tokens - len(hr) * BS if n is None else n
    assert new_kv.allocate_slots(new, n, hn) and ref_kv.allocate_slots(ref, n, hr)
    new.num_computed_tokens = ref.num_computed_tokens = len(hr) * BS + n
    assert new_kv.num_free_blocks == ref_kv.num_free_blocks
    return len(hr)


def _evict_all(new_kv, ref_kv, rid: int) -> None:
    """A request without keys takes every block (evicting every cached one), then leaves."""
    n = new_kv.num_gpu_blocks * BS
    a, b = make_request(rid, n, 1), make_request(rid, n, 1)
    assert new_kv.allocate_slots(a, n) and ref_kv.allocate_slots(b, n)
    new_kv.free(rid), ref_kv.free(rid)


@pytest.mark.parametrize("capacity", [None, 0])  # (None: the cache's own, one key a block)
def test_a_context_evicted_whole_is_taken_back_by_its_next_turn_without_inserting_its_keys(capacity):
    new_kv, ref_kv = KVCacheManager(20, BS), ReferenceKVCache(20, BS)
    prefix = new_kv._prefix
    if capacity is not None:
        prefix.dead_capacity = capacity
    ids = list(range(1, 13))
    t1, r1 = _turn(1, ids[:8], 8)
    assert _admit(new_kv, ref_kv, t1, r1) == 0
    group = new_kv._held[1].segs[0][0]
    new_kv.free(1), ref_kv.free(1)
    _evict_all(new_kv, ref_kv, 99)
    assert group.num_cached == 0
    inserts = prefix.num_inserts
    t2, r2 = _turn(2, ids[:10], 10)  # the context and a new message
    assert _admit(new_kv, ref_kv, t2, r2) == 0  # (nothing cached: no hit either way)
    if capacity is None:  # kept: the same group again, only the new message's two keys inserted
        assert len(prefix.indexed()) == 10 and new_kv._held[2].segs == [[group, 0, 10]]
        assert group.num_cached == 10 and prefix.num_taken_back == 1
    else:  # dropped at its eviction: a new group, every key inserted again
        assert new_kv._held[2].segs[0][0] is not group and prefix.num_taken_back == 0
    assert prefix.num_inserts == inserts + 1
    new_kv.free(2), ref_kv.free(2)
    t3, r3 = _turn(3, ids, 12)  # the next turn hits the whole context the second registered
    assert _admit(new_kv, ref_kv, t3, r3) == 10
    new_kv.free(3), ref_kv.free(3)
    assert new_kv.num_free_blocks == ref_kv.num_free_blocks == 20
    new_kv.check_all_free()


def test_dead_groups_past_the_capacity_are_dropped_oldest_first():
    new_kv, ref_kv = KVCacheManager(20, BS), ReferenceKVCache(20, BS)
    prefix = new_kv._prefix
    prefix.dead_capacity = 10
    a, ra = _turn(1, list(range(100, 108)), 8)
    b, rb = _turn(2, list(range(200, 206)), 6)
    _admit(new_kv, ref_kv, a, ra), _admit(new_kv, ref_kv, b, rb)
    ga, gb = new_kv._held[1].segs[0][0], new_kv._held[2].segs[0][0]
    new_kv.free(1), ref_kv.free(1)
    new_kv.free(2), ref_kv.free(2)
    _evict_all(new_kv, ref_kv, 99)  # a dies first (8 keys kept), then b (14 > 10: a's keys dropped)
    assert ga.num_runs == 0 and gb.num_cached == 0 and gb.num_runs == 6 and len(prefix.indexed()) == 6
    assert list(prefix._dead) == [gb] and prefix._num_dead == 6
    # each next turn: nothing hit, its blocks registered (b's into its own group again)
    a2, ra2 = _turn(3, list(range(100, 109)), 9)
    b2, rb2 = _turn(4, list(range(200, 207)), 7)
    assert _admit(new_kv, ref_kv, a2, ra2) == 0 and _admit(new_kv, ref_kv, b2, rb2) == 0
    assert new_kv._held[4].segs == [[gb, 0, 7]] and prefix.num_taken_back == 1
    for r in (3, 4):
        new_kv.free(r), ref_kv.free(r)
    new_kv.check_all_free()


def test_a_first_chunk_takes_back_part_of_a_dead_group_and_its_later_chunks_register_as_new_keys():
    """A prompt's first chunk fills the dead group's first slots; the group's keys past the chunk
    leave the index (as a drop would have taken them), so the later chunks register as new keys:
    what a stretch's plan (`plan_appends`) needs. Hits and free counts are the reference's."""
    new_kv, ref_kv = KVCacheManager(20, BS), ReferenceKVCache(20, BS)
    prefix = new_kv._prefix
    ids = list(range(1, 13))
    t1, r1 = _turn(1, ids[:8], 8)
    _admit(new_kv, ref_kv, t1, r1)
    group = new_kv._held[1].segs[0][0]
    new_kv.free(1), ref_kv.free(1)
    _evict_all(new_kv, ref_kv, 99)
    t2, r2 = _turn(2, ids, 12)
    _admit(new_kv, ref_kv, t2, r2, 3 * BS)  # a first chunk of 3 blocks
    assert new_kv._held[2].segs == [[group, 0, 3]] and group.num_runs == 3 and len(prefix.indexed()) == 3
    assert prefix.num_taken_back == 1
    # the rest of the prompt in one chunk: its keys are new (a plan of the bulk registration holds)
    assert prefix.unindexed(t2.kv_block_keys, 3, 12) is not None
    assert new_kv.allocate_slots(t2, 9 * BS) and ref_kv.allocate_slots(r2, 9 * BS)
    assert new_kv._held[2].segs == [[group, 0, 12]] and len(prefix.indexed()) == 12
    new_kv.free(2), ref_kv.free(2)
    t3, r3 = _turn(3, ids, 12)
    assert _admit(new_kv, ref_kv, t3, r3) == 11  # (a hit leaves the last token to compute)
    new_kv.free(3), ref_kv.free(3)
    new_kv.check_all_free()


def test_the_random_life_against_the_reference_takes_dead_groups_back(monkeypatch):
    """`test_kv_cache_equivalence.py`'s random life (every answer compared with the per-block
    reference after every operation) runs through dead groups taken back."""
    taken = keep_kv_caches(monkeypatch)
    for seed in (1, 2, 3):
        _run(seed, 16, num_blocks=100, steps=1500)
    assert sum(kv._prefix.num_taken_back for kv in taken) > 10


TIGHT = ["workload.num_requests=300", "engine.gpu_memory_utilization=0.35", "workload.arrival.rate_per_s=2",
         "workload.sessions.turns=[2,4]"]


def _simulate(sets: list[str], monkeypatch, per_block: int) -> tuple:
    with monkeypatch.context() as m:
        m.setattr(kv_cache, "DEAD_KEYS_PER_BLOCK", per_block)
        caches = keep_kv_caches(m)
        result = simulate(load_scenario(SESSIONS, sets), keep_steps=True)
    return result, sum(kv._prefix.num_taken_back for kv in caches)


@pytest.mark.parametrize("extra", [[], ["scheduler.name=edf"], ["scheduler.name=andes", "engine.swap_space_gb=0.5"],
                                   ["replicas=4", "router.name=least-requests", "workload.arrival.rate_per_s=4"]])
def test_sessions_with_dead_groups_kept_give_the_results_of_dropping_them(extra, monkeypatch):
    kept, taken = _simulate(TIGHT + extra, monkeypatch, 1)
    dropped, filled = _simulate(TIGHT + extra, monkeypatch, 0)
    # (the path ran: next turns took their contexts evicted whole back; with none kept, only
    # live groups' evicted slots are filled again)
    assert taken > filled + 15
    assert outcome(kept) == outcome(dropped)
    assert [r.num_cached_tokens_total for r in kept.requests] == [r.num_cached_tokens_total for r in dropped.requests]
    assert_same_steps(kept, dropped)
    assert kept.prefix_hits == dropped.prefix_hits and kept.prefix_hits[1] > 0
    assert kept.num_fast_forwarded_steps == dropped.num_fast_forwarded_steps > 0
