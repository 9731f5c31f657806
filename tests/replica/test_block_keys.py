"""Prefix keys as runs of hash blocks (`BlockKeys`) are the per-block keys, built lazily."""

from __future__ import annotations

import random

import pytest

from servesim.replica.block_keys import BlockKeys, block_idents
from servesim.replica.packed_keys import RUN_KEY_BASE, fold, pack_long, range_bounds


def _per_block(ids, H, bs):
    return tuple((ids[(e - 1) // H], e) for e in range(bs, len(ids) * H + 1, bs))


@pytest.mark.parametrize("H,bs", [(512, 16), (16, 16), (24, 16), (8, 16), (5, 8), (100, 32)])
def test_keys_are_the_per_block_keys_and_runs_cover_them(H, bs):
    rng = random.Random(H * bs)
    for n in range(6):
        ids = [rng.randrange(50) for _ in range(n)]
        keys = BlockKeys(ids, H, bs)
        want = _per_block(ids, H, bs)
        assert keys.as_tuple() == want and len(keys) == len(want) and bool(keys) == bool(want)
        assert list(keys) == list(want) and (keys[1:3] == want[1:3])
        # runs are contiguous, in order, and each holds the blocks of one hash id
        assert list(keys.starts) == ([0] + list(keys.ends)[:-1] if want else []) and (keys.ends[-1] if want else 0) == len(want)
        for rk, a, b in zip(keys.run_keys, keys.starts, keys.ends):  # one hash id per run, keyed (id, start)
            (h,) = {k[0] for k in want[a:b]}
            assert rk == fold(h) * RUN_KEY_BASE + a


def test_mooncake_hash_block_is_one_run_of_32_blocks():
    keys = BlockKeys([7, 9, 11], 512, 16)
    B = RUN_KEY_BASE
    assert keys.run_keys[:] == [7 * B, 9 * B + 32, 11 * B + 64] and list(keys.ends) == [32, 64, 96] and len(keys) == 96
    assert keys[33] == (9, 34 * 16)
    named = BlockKeys(["a", "b"], 512, 16)  # ids that are not ints: (id, start) tuples
    assert named.run_keys[:] == [("a", 0), ("b", 32)] and named[40] == ("b", 41 * 16)


@pytest.mark.parametrize("lo,hi", [(0, 100), (-(1 << 30), -(1 << 30) + 5), ((1 << 30) - 5, 1 << 30), (1 << 30, (1 << 30) + 5),
                                   ((1 << 31) - 5, 1 << 31), (1 << 70, (1 << 70) + 3)])
def test_long_contexts_pack_like_short_ones(lo, hi):
    # more than 64 runs go through numpy when the ids fit (id * RUN_KEY_BASE + start in an int64)
    rng = random.Random(hi)
    ids = tuple(rng.randrange(lo, hi) for _ in range(300))
    for H in (16, 64):
        keys = BlockKeys(ids, H, 16)
        r = H // 16
        want = [fold(h) * RUN_KEY_BASE + i * r for i, h in enumerate(ids)]
        got = keys.run_keys[:]
        assert got == want and all(type(k) is int for k in got)


F = 1 << 48  # `prefix.FOLLOW_UP_IDS`: the first id of a follow-up turn


@pytest.mark.parametrize("ids,by_ranges", [
    (tuple(range(10, 310)), True),  # a first turn: one fresh range
    (tuple(range(10, 200)) + tuple(range(F, F + 150)) + tuple(range(F + 900, F + 960)), True),  # a third turn
    (tuple(range(-(1 << 62), -(1 << 62) + 100)), True),  # the lowest ids split into ranges
    (tuple(range((1 << 62) - 50, (1 << 62) + 50)), True),  # past numpy's split (bisection has no limit)
    (tuple(range((1 << 63) - 50, (1 << 63) + 50)), True),  # past int64
    (tuple(range(F + 40, F + 80)) + tuple(range(F, F + 40)), True),  # ranges not ascending
    (tuple(range(F, F + 40)) + tuple(random.Random(3).randrange(F, 2 * F) for _ in range(60)), False),  # not ranges
])
def test_generated_contexts_pack_by_ranges(ids, by_ranges):
    """A context made of ranges of consecutive ids packs each range as one `range` of keys
    (`pack_long`), the same ints as id by id, including follow-up ids >= 2**48."""
    for H in (16, 64):
        r = H // 16
        got = BlockKeys(ids, H, 16).run_keys[:]
        assert got == [fold(h) * RUN_KEY_BASE + i * r for i, h in enumerate(ids)] and all(type(k) is int for k in got)
    packed = pack_long(ids, range(0, len(ids), 1))
    assert (packed is not None) == by_ranges  # (ids >= 2**30 pack in numpy only as ranges)
    if by_ranges:
        assert packed == [fold(h) * RUN_KEY_BASE + i for i, h in enumerate(ids)]


@pytest.mark.parametrize("ids,bounds", [
    (tuple(range(10, 310)), [0, 300]),  # a first turn
    (tuple(range(10, 200)) + tuple(range(F, F + 150)) + tuple(range(F + 150 + 9, F + 200)), [0, 190, 340, 381]),
    (tuple(range(F, F + 30)) + (F + 99,) + tuple(range(F + 31, F + 60)), [0, 30, 31, 60]),  # an id out of a range
    ((1, 2, 9, 4, 5), [0, 2, 3, 5]),
    # bisection misled (ids[m] - ids[0] == m at every probe, ids[1] out of order): the check gives up
    ((1, 9, 3, 4, 5), None),
    (tuple(range(0, 200, 2)), None),  # not consecutive: gives up after `limit` pieces
])
def test_range_bounds_split_ids_into_consecutive_pieces(ids, bounds):
    """`range_bounds` (what `pack_long` packs a generated context by) returns the pieces of
    consecutive ids, each checked, or None when it cannot (then numpy or id by id)."""
    assert range_bounds(ids, 5) == bounds


def test_keys_compare_and_hash_like_the_tuple():
    a, b = BlockKeys([1, 2], 16, 16), BlockKeys([1, 3], 16, 16)
    assert a < b and b > a and a == _per_block([1, 2], 16, 16) and a != b
    assert () < a and sorted([b, (), a]) == [(), a, b]  # as a policy sorts (r.kv_block_keys or ())
    assert hash(a) == hash(_per_block([1, 2], 16, 16))


@pytest.mark.parametrize("H,bs", [(512, 16), (16, 16), (24, 16), (5, 8)])
def test_block_idents_are_equal_exactly_where_the_keys_are(H, bs):
    rng = random.Random(H + bs)
    for _ in range(20):
        a_ids = [rng.randrange(4) for _ in range(rng.randrange(1, 6))]
        b_ids = [rng.randrange(4) for _ in range(rng.randrange(1, 6))]
        a, b = BlockKeys(a_ids, H, bs), BlockKeys(b_ids, H, bs)
        ia, ib = block_idents(a), block_idents(b)
        assert len(ia) == len(a) and len(ib) == len(b)
        assert [x == y for x, y in zip(ia, ib)] == [x == y for x, y in zip(a, b)]
    assert block_idents(("x", "y")) == ["x", "y"]  # plain keys are their own identity


@pytest.mark.parametrize("child", [
    tuple(range(1000, 1300)) + tuple(range(5000, 5080)),  # the next turn: the context, then new ids
    tuple(range(1000, 1150)),  # shorter than the other
    (1000, 1001, 77) + tuple(range(5000, 5200)),  # diverges early: no reuse
    tuple(range(1000, 1300)) + ("x",),  # ids that are not all ints: (id, start) keys, no reuse
])
def test_reused_run_keys_are_the_ones_built(child):
    parent = BlockKeys(tuple(range(1000, 1300)), 16, 16)
    parent.run_keys.as_list()
    built = parent.take_run_keys()
    assert parent.run_keys._list is None  # given away (the next turn may extend it in place)
    keys = BlockKeys(child, 16, 16)
    reused = keys.reuse(built)
    assert reused == (child[:3] != (1000, 1001, 77) and "x" not in child)
    assert keys.run_keys[:] == BlockKeys(child, 16, 16).run_keys[:]
    assert not BlockKeys(child, 32, 16).reuse(built)  # other run length


def test_a_next_turn_reuses_the_previous_turns_keys():
    from servesim.replica.kv_cache import KVCacheManager
    from tests.factories import make_request

    kv = KVCacheManager(10_000, 16)
    first = make_request(1, 300 * 16, 10, hash_ids=tuple(range(7, 307)), hash_block_tokens=16)
    first.kv_block_keys = BlockKeys(first.hash_ids, 16, 16)
    assert kv.allocate_slots(first, first.prompt_len, kv.get_computed_blocks(first))
    kv.free(first.id)
    assert first.kv_block_keys.run_keys._list is None  # released, kept by the cache for reuse
    nxt = make_request(2, 320 * 16, 10, hash_ids=first.hash_ids + tuple(range(900, 920)), hash_block_tokens=16)
    nxt.kv_block_keys = BlockKeys(nxt.hash_ids, 16, 16)
    hits = kv.get_computed_blocks(nxt)
    assert hits.num_keyed == 300 and not kv._recent_keys  # reused (taken from the cache)
    assert nxt.kv_block_keys.run_keys[:] == BlockKeys(nxt.hash_ids, 16, 16).run_keys[:]


@pytest.mark.parametrize("new", [tuple(range(F, F + 40)), tuple(range(F, F + 20)) + (5, 9, F + 77)])
def test_a_reused_list_packs_the_new_ids_as_built(new):
    """The next turn's new ids (one fresh range, or not) extend the kept list to the keys
    `BlockKeys` builds id by id."""
    parent = BlockKeys(tuple(range(1000, 1300)), 16, 16)
    parent.run_keys.as_list()
    child = parent._ids + new
    keys = BlockKeys(child, 16, 16)
    assert keys.reuse(parent.take_run_keys())
    assert keys.run_keys[:] == [fold(h) * RUN_KEY_BASE + i for i, h in enumerate(child)]


def test_a_policy_without_lookups_reuses_the_previous_turns_keys():
    """orca, sarathi and vtc allocate a prompt without looking up hits: the next turn's keys
    are still built from its previous turn's (the cache's kept list, taken at allocation)."""
    from servesim.replica.kv_cache import KVCacheManager
    from tests.factories import make_request

    kv = KVCacheManager(10_000, 16)
    first = make_request(1, 300 * 16, 10, hash_ids=tuple(range(7, 307)), hash_block_tokens=16)
    first.kv_block_keys = BlockKeys(first.hash_ids, 16, 16)
    assert kv.allocate_slots(first, first.prompt_len)
    kv.free(first.id)
    assert kv._recent_keys
    nxt = make_request(2, 320 * 16, 10, hash_ids=first.hash_ids + tuple(range(F, F + 20)), hash_block_tokens=16)
    nxt.kv_block_keys = BlockKeys(nxt.hash_ids, 16, 16)
    assert kv.allocate_slots(nxt, nxt.prompt_len)
    assert not kv._recent_keys  # taken
    assert nxt.kv_block_keys.run_keys[:] == [fold(h) * RUN_KEY_BASE + i for i, h in enumerate(nxt.hash_ids)]


def test_a_next_turn_on_another_replica_reuses_the_previous_turns_keys():
    """The KV caches of a pool share one store of freed turns' keys (`PoolSpec.recent_keys`)."""
    from servesim.replica.kv_cache import KVCacheManager
    from servesim.replica.recent_keys import RECENT_KEYS, RecentKeys
    from tests.factories import make_request

    store = RecentKeys()
    a, b = KVCacheManager(10_000, 16), KVCacheManager(10_000, 16)
    a.share_recent_keys(store), b.share_recent_keys(store)
    assert store.capacity == 2 * RECENT_KEYS  # room for both caches' turns
    first = make_request(1, 300 * 16, 10, hash_ids=tuple(range(7, 307)), hash_block_tokens=16)
    first.kv_block_keys = BlockKeys(first.hash_ids, 16, 16)
    assert a.allocate_slots(first, first.prompt_len, a.get_computed_blocks(first))
    a.free(first.id)
    assert store  # kept by replica a's cache ...
    nxt = make_request(2, 320 * 16, 10, hash_ids=first.hash_ids + tuple(range(900, 920)), hash_block_tokens=16)
    nxt.kv_block_keys = BlockKeys(nxt.hash_ids, 16, 16)
    assert b.get_computed_blocks(nxt).num_keyed == 0  # ... no hit on replica b,
    assert not store  # but its keys were built from the previous turn's
    assert nxt.kv_block_keys.run_keys[:] == BlockKeys(nxt.hash_ids, 16, 16).run_keys[:]


def test_a_finished_turns_offered_keys_are_copied_by_its_next_turn():
    """A turn that finished inside a stretch offers its built keys before the stretch frees its
    blocks (`RecentKeys.offer`): its next turn, on another replica, builds its keys from a copy
    (the finished turn still holds the list); the free then keeps the list itself as before."""
    from servesim.replica.kv_cache import KVCacheManager
    from servesim.replica.recent_keys import RecentKeys
    from tests.factories import make_request

    store = RecentKeys()
    a, b = KVCacheManager(10_000, 16), KVCacheManager(10_000, 16)
    a.share_recent_keys(store), b.share_recent_keys(store)
    first = make_request(1, 300 * 16, 10, hash_ids=tuple(range(7, 307)), hash_block_tokens=16)
    first.kv_block_keys = BlockKeys(first.hash_ids, 16, 16)
    assert a.allocate_slots(first, first.prompt_len, a.get_computed_blocks(first))
    own = first.kv_block_keys.run_keys._list
    want = own[:]
    a.offer_keys(first.kv_block_keys)
    nxt = make_request(2, 320 * 16, 10, hash_ids=first.hash_ids + tuple(range(900, 920)), hash_block_tokens=16)
    nxt.kv_block_keys = BlockKeys(nxt.hash_ids, 16, 16)
    assert b.get_computed_blocks(nxt).num_keyed == 0 and not store  # built from the offered keys
    assert nxt.kv_block_keys.run_keys._list is not own  # (a copy: the finished turn's list unchanged)
    assert first.kv_block_keys.run_keys._list is own and own == want
    assert nxt.kv_block_keys.run_keys[:] == BlockKeys(nxt.hash_ids, 16, 16).run_keys[:]
    a.free(first.id)
    assert store._by_first[7][2] is own  # kept whole at the free, as without the offer


def test_the_replicas_of_a_pool_share_their_recent_keys():
    from pathlib import Path

    from servesim import load_scenario
    from servesim.cluster.build import resolve_pools

    root = Path(__file__).resolve().parents[2]
    scenario = load_scenario(str(root / "examples/sessions.yaml"), ["replicas=3"])
    (pool,) = resolve_pools(scenario)
    kvs = [pool.make_parts()[1] for _ in range(3)]
    assert all(kv._recent_keys is pool.recent_keys for kv in kvs)


def test_sglangs_next_turn_reuses_the_previous_turns_keys():
    from servesim.replica.radix_cache import RadixKVCache
    from tests.factories import make_request

    kv = RadixKVCache(10_000, 16)
    first = make_request(1, 300 * 16, 10, hash_ids=tuple(range(7, 307)), hash_block_tokens=16)
    first.kv_block_keys = BlockKeys(first.hash_ids, 16, 16)
    assert kv.allocate_slots(first, first.prompt_len, kv.match(first))
    first.num_computed_tokens = first.prompt_len
    kv.cache_finished(first)
    assert kv._recent_keys and first.kv_block_keys.run_keys._list is None  # kept for the next turn
    nxt = make_request(2, 320 * 16, 10, hash_ids=first.hash_ids + tuple(range(900, 920)), hash_block_tokens=16)
    nxt.kv_block_keys = BlockKeys(nxt.hash_ids, 16, 16)
    assert len(kv.match(nxt)) == 300 and not kv._recent_keys  # hit, keys built from the previous turn's
    assert nxt.kv_block_keys.run_keys[:] == BlockKeys(nxt.hash_ids, 16, 16).run_keys[:]


def test_run_keys_at_one_position_spread_over_dict_slots():
    # The index holds one key per block on sessions: the keys of many requests at one position
    # must not share their hash's low bits (which pick the dict slot), as `id << 32 | start` did.
    ids = [(1 << 48) + 1000 * i for i in range(1000)] + list(range(1000))
    slots = {hash(BlockKeys([h], 16, 16).run_keys[0]) & 0xFFFF for h in ids}
    assert len(slots) > 1900  # (1,984: some collide by chance in 65,536; one value before)
    # one-to-one: a key gives back its (id, start), negative ids and the largest start included
    for h in (-(1 << 40), -1, 0, 7, (1 << 48) + 3):
        keys = BlockKeys([h, h + 1], (1 << 32) - 1, 1)
        assert [divmod(k, RUN_KEY_BASE) for k in keys.run_keys] == [(fold(h), 0), (fold(h + 1), (1 << 32) - 1)]


def test_sglangs_radix_cache_builds_a_requests_block_idents_once():
    # Mooncake's shape: 512-token hash blocks over 16-token blocks, prompts sharing a prefix of
    # hash blocks, prefilled in chunks that end inside a hash block (an insert per chunk, which
    # splits extents), matched before admission. The kept list is read at the match and each
    # insert, left unchanged by them, and dropped at the finish; the cache decides as one fed
    # the plain per-block keys (built afresh at every read).
    from servesim.replica.radix_cache import RadixKVCache
    from tests.factories import make_request

    rng = random.Random(15)
    kv, ref = RadixKVCache(4_000, 16), RadixKVCache(4_000, 16)
    shared = [tuple(range(100 * i, 100 * i + rng.randrange(1, 4))) for i in range(3)]
    running: list = []
    kept = 0
    for i in range(60):
        ids = rng.choice(shared) + tuple(range(10_000 + 100 * i, 10_000 + 100 * i + rng.randrange(1, 6)))
        prompt = len(ids) * 512 - rng.randrange(0, 500)
        reqs = [make_request(i, prompt, 4, hash_ids=ids, hash_block_tokens=512) for _ in range(2)]
        reqs[0].kv_block_keys = keys = BlockKeys(ids, 512, 16)
        reqs[1].kv_block_keys = tuple(BlockKeys(ids, 512, 16))  # the reference's plain keys
        hits = [len(c.match(r)) for c, r in zip((kv, ref), reqs)]
        assert hits[0] == hits[1]
        built = keys._idents
        assert built is not None and built == block_idents(BlockKeys(ids, 512, 16))
        done = hits[0] * 16
        while done < prompt:  # chunk by chunk, each chunk's full blocks inserted
            chunk = min(rng.randrange(300, 1500), prompt - done)
            for c, r in zip((kv, ref), reqs):
                assert c.allocate_slots(r, chunk, c.match(r) if not done else ())
                r.num_computed_tokens = done + chunk
                c.cache_unfinished(r)
            done += chunk
            assert block_idents(keys) is built and kv.num_free_blocks == ref.num_free_blocks
            kept += 1
        assert built == block_idents(BlockKeys(ids, 512, 16))  # unchanged by the cache's reads
        running.append(reqs)
        if len(running) > 3 or rng.random() < 0.3:  # finish the oldest
            for c, r in zip((kv, ref), running.pop(0)):
                c.cache_finished(r)
        assert kv.num_free_blocks == ref.num_free_blocks and kv.tree_blocks == ref.tree_blocks
    assert kept > 60 and keys._idents is built
    kv.cache_finished(running[-1][0])
    assert keys._idents is None  # released with the request's other lookup keys


@pytest.mark.parametrize("tail_tokens", [0, 5 * 16, 40 * 16])
def test_generated_ids_carry_their_ranges_and_build_the_same_keys(monkeypatch, tail_tokens):
    """`HashIds` makes `IdRanges` (a shared prefix, then turns extending each other): their run
    keys are packed from the carried ranges (no `range_bounds` search) and a next turn's are
    reused from its previous turn's without comparing its ids (no tuple slice), each equal to
    the keys of the plain tuple of the same ids."""
    import servesim.replica.packed_keys as pk
    from servesim.workload.prefix import FOLLOW_UP_IDS, HashIds, IdRanges

    firsts, follow = HashIds(16), HashIds(16, FOLLOW_UP_IDS)
    system = firsts.fresh(20)
    turn = firsts.extend(system, 300 * 16)
    turns = [turn]
    for more in (100 * 16, tail_tokens, 7 * 16):
        turns.append(follow.extend(turns[-1], len(turns[-1]) * 16 + more))
    assert all(type(t) is IdRanges for t in turns) and turns[1].bounds == (0, 20, 300, 400)
    assert firsts.extend(turns[1], 350 * 16).bounds == (0, 20, 300, 350)  # (a shorter context: cut)
    assert all(t == tuple(t) and hash(t) == hash(tuple(t)) for t in turns)  # a tuple for every reader
    monkeypatch.setattr(pk, "range_bounds", lambda *a: pytest.fail("ranges searched"))
    keys = BlockKeys(turns[0], 16, 16)
    assert keys.run_keys[:] == [fold(h) * RUN_KEY_BASE + i for i, h in enumerate(turns[0])]  # packed by its ranges
    fast = 0
    for prev, nxt in zip(turns, turns[1:]):
        keys = BlockKeys(prev, 16, 16)
        keys.run_keys.as_list()
        built = keys.take_run_keys()
        child = BlockKeys(nxt, 16, 16)
        fast += nxt.extends(prev)
        assert child.reuse(built)
        assert child.run_keys[:] == [fold(h) * RUN_KEY_BASE + i for i, h in enumerate(tuple(nxt))]
    assert fast == 3  # every turn seen to extend its previous one from the ranges


def test_id_ranges_that_differ_fall_back_to_comparing_ids():
    """`IdRanges.extends` answers True only when the ranges show it: other ids (a different
    range start or first id) are compared as tuples, and those that differ are not reused."""
    from servesim.workload.prefix import IdRanges

    prev = IdRanges(tuple(range(1000, 1300)), (0, 300))
    split = IdRanges(tuple(range(1000, 1340)), (0, 150, 340))  # the same ids, other ranges
    other = IdRanges(tuple(range(1001, 1301)) + tuple(range(F, F + 40)), (0, 300, 340))
    assert not split.extends(prev) and not other.extends(prev)
    for child, reused in ((split, True), (other, False)):
        keys = BlockKeys(prev, 16, 16)
        keys.run_keys.as_list()
        new = BlockKeys(child, 16, 16)
        assert new.reuse(keys.take_run_keys()) == reused
        assert new.run_keys[:] == [fold(h) * RUN_KEY_BASE + i for i, h in enumerate(tuple(child))]


def test_a_freed_turns_keys_are_kept_and_reused_by_first_id_without_indexing_its_ids(monkeypatch):
    """A turn's `IdRanges` ids are kept under their first id when its blocks are freed, and its
    next turn takes them by that id and packs its fresh range, all read from the ranges
    (`firsts`): indexing an `IdRanges` is a Python call per read, made at every free. (The
    prefix cache's own registration reads such runs by range and builds no list: built here as
    a reader of the keys one by one does, the radix cache's `block_idents`.)"""
    from servesim.replica.kv_cache import KVCacheManager
    from servesim.workload.prefix import FOLLOW_UP_IDS, HashIds, IdRanges
    from tests.factories import make_request

    firsts, follow = HashIds(16), HashIds(16, FOLLOW_UP_IDS)
    ids = firsts.extend(firsts.fresh(20), 300 * 16)
    nxt_ids = follow.extend(ids, 340 * 16)
    getitem = IdRanges.__getitem__

    def no_index(self, i):
        if type(i) is not slice:
            pytest.fail("an IdRanges indexed")
        return getitem(self, i)

    monkeypatch.setattr(IdRanges, "__getitem__", no_index)
    kv = KVCacheManager(10_000, 16)
    first = make_request(1, 300 * 16, 10, hash_ids=ids, hash_block_tokens=16)
    first.kv_block_keys = BlockKeys(ids, 16, 16)
    assert first.kv_block_keys.first_id() == 0 and BlockKeys(firsts.fresh(0), 16, 16).first_id() is None
    assert kv.allocate_slots(first, first.prompt_len, kv.get_computed_blocks(first))
    assert first.kv_block_keys.run_keys._list is None  # (registered by range)
    first.kv_block_keys.run_keys.as_list()
    kv.free(first.id)
    assert list(kv._recent_keys._by_first) == [0]  # kept under the conversation's first id
    nxt = make_request(2, 340 * 16, 10, hash_ids=nxt_ids, hash_block_tokens=16)
    nxt.kv_block_keys = BlockKeys(nxt_ids, 16, 16)
    assert kv.get_computed_blocks(nxt).num_keyed == 300 and not kv._recent_keys  # taken
    monkeypatch.setattr(IdRanges, "__getitem__", getitem)
    assert nxt.kv_block_keys.run_keys[:] == [fold(h) * RUN_KEY_BASE + i for i, h in enumerate(tuple(nxt_ids))]


def test_a_follow_ups_run_keys_are_folded_into_a_c_long():
    """A follow-up turn's ids (`FOLLOW_UP_IDS` = 2**48 on) are kept, but its run keys pack
    `fold(id)` = id - F - 2**28: two-digit ints within a C long (a `range` of keys, not Python
    arithmetic per key), the same whichever way they are built (its ranges, a tuple of the same
    ids read back from a trace, id by id, a next turn's reuse), one-to-one with (id, start)."""
    from servesim.replica.packed_keys import id_keys
    from servesim.workload.prefix import FOLLOW_UP_IDS, HashIds, IdRanges

    firsts, follow = HashIds(16), HashIds(16, FOLLOW_UP_IDS)
    first = firsts.fresh(200)
    nxt = follow.extend(first, 300 * 16)
    assert type(nxt) is IdRanges and nxt[200] == FOLLOW_UP_IDS  # the ids themselves unchanged
    keys = BlockKeys(nxt, 16, 16).run_keys[:]
    want = [fold(h) * RUN_KEY_BASE + i for i, h in enumerate(tuple(nxt))]
    assert keys == want and all(abs(k) < 1 << 60 for k in keys[201:])  # (two 30-bit digits past F's)
    B = 1 << 28
    assert keys[200:202] == [-B * RUN_KEY_BASE + 200, (1 - B) * RUN_KEY_BASE + 201]  # F -> -2**28, F + 1 -> 1 - 2**28
    # ... whose dict slots (the hash's low bits) are those of the unfolded keys: a range of
    # them at consecutive positions does not share one slot
    assert [hash(k) & 0xFFFF for k in keys] == [hash(h * RUN_KEY_BASE + i) & 0xFFFF for i, h in enumerate(tuple(nxt))]
    assert type(id_keys(FOLLOW_UP_IDS, 100, 200, 1)) is range  # (a C-long range, not `accumulate`)
    for ids in (tuple(nxt), tuple(nxt)[190:230]):  # a trace's tuple: by ranges (> 64 ids), id by id
        assert BlockKeys(ids, 16, 16).run_keys[:] == [fold(h) * RUN_KEY_BASE + i for i, h in enumerate(ids)]
    built = BlockKeys(first, 16, 16)
    built.run_keys.as_list()
    child = BlockKeys(nxt, 16, 16)
    assert child.reuse(built.take_run_keys()) and child.run_keys[:] == want  # a next turn's reuse
    assert len(set(keys)) == len(keys) and not set(keys) & set(BlockKeys(firsts.fresh(300), 16, 16).run_keys[:])


@pytest.mark.parametrize("edge", [-(1 << 28), 0, 1 << 48, (1 << 48) + (1 << 28)])
def test_fold_is_one_to_one_and_ranges_across_its_ends_pack_id_by_id(edge):
    """`fold` swaps [F, F + 2**28) with [-2**28, 0), in order, and keeps every other id: it is
    its own inverse, so keys stay one-to-one; a range of ids across one of those ends is cut
    there and packs as id by id would."""
    from servesim.replica.packed_keys import id_keys, pack_ranges

    ids = range(edge - 40, edge + 40)
    folded = [fold(h) for h in ids]
    assert [fold(g) for g in folded] == list(ids) and len(set(folded)) == len(folded)
    for step in (1, 4):
        want = [fold(h) * RUN_KEY_BASE + 8 + i * step for i, h in enumerate(ids)]
        assert list(id_keys(edge - 40, 80, 8, step)) == want
        assert pack_ranges((0, 30, 80), (edge - 40, edge - 10), range(8, 8 + 80 * step, step)) == want
