"""The radix cache by extents (`radix_cache.py`) against the block-granular reference
(`radix_reference.py`): the same random operations, the same answers, and the same cached
blocks after every operation - so evictions happen in the same order, block by block."""

from __future__ import annotations

import random

import pytest

from servesim.replica.radix_cache import RadixKVCache
from tests.factories import make_request
from tests.replica.radix_reference import RadixReference

BS = 4


def _keys(rng: random.Random) -> tuple:
    """Chained keys: a family's shared prefix, then a branch that diverges at `d`."""
    f, d, b = rng.randrange(3), rng.randrange(1, 6), rng.randrange(3)
    n = rng.randrange(1, 9)
    return tuple((f, i) if i < d else (f, d, b, i) for i in range(n))


def _reference_paths(kv: RadixReference) -> set[tuple]:
    out, stack = set(), [(kv.root, ())]
    while stack:
        node, path = stack.pop()
        for key, child in node.children.items():
            out.add(path + (key,))
            stack.append((child, path + (key,)))
    return out


def _extent_paths(kv: RadixKVCache) -> set[tuple]:
    out, stack = set(), [(kv.root, ())]
    while stack:
        node, path = stack.pop()
        for child in node.children.values():
            p = path
            for ident in child.idents:
                p = p + (ident,)
                out.add(p)
            stack.append((child, p))
    return out


def _same_state(new: RadixKVCache, ref: RadixReference) -> None:
    assert (new.num_free_blocks, new.evictable_blocks, new.tree_blocks, new._truly_free) == \
        (ref.num_free_blocks, ref.evictable_blocks, ref.tree_blocks, ref._truly_free)
    assert _extent_paths(new) == _reference_paths(ref)


@pytest.mark.parametrize("seed", range(6))
def test_extents_match_the_block_tree_step_by_step(seed):
    rng = random.Random(seed)
    new, ref = RadixKVCache(40, BS), RadixReference(40, BS)
    running, next_id = [], 0
    for _ in range(400):
        op = rng.random()
        if op < 0.4 or not running:  # admit a request with its prefix hit
            keys = _keys(rng)
            req = make_request(next_id, len(keys) * BS + rng.randrange(0, 2 * BS), rng.randrange(1, 9))
            req.kv_block_keys = keys
            next_id += 1
            hn, hr = new.match(req), ref.match(req)
            assert len(hn) == len(hr)
            n = req.prompt_len - len(hn) * BS
            assert new.blocks_needed(req, n, hn) == ref.blocks_needed(req, n, hr)
            ok = new.allocate_slots(req, n, hn)
            assert ok == ref.allocate_slots(req, n, hr)
            if ok:
                req.num_computed_tokens = len(hn) * BS + n
                running.append(req)
        elif op < 0.6:  # SGLang inserts after a prefill chunk
            req = rng.choice(running)
            new.cache_unfinished(req)
            ref.cache_unfinished(req)
        elif op < 0.9:  # finish: insert and unlock
            req = running.pop(rng.randrange(len(running)))
            req.num_computed_tokens = req.num_tokens - 1
            new.cache_finished(req)
            ref.cache_finished(req)
        else:  # retract
            req = running.pop(rng.randrange(len(running)))
            new.free(req.id)
            ref.free(req.id)
        _same_state(new, ref)
    for req in running:
        new.free(req.id)
        ref.free(req.id)
    new.check_all_free()


def test_eviction_takes_the_oldest_leaf_extent_from_its_end_across_shared_extents():
    kv = RadixKVCache(10, BS)

    def run(i, keys):
        req = make_request(i, len(keys) * BS + 1, 1)
        req.kv_block_keys = tuple(keys)
        hits = kv.match(req)
        assert kv.allocate_slots(req, req.prompt_len - len(hits) * BS, hits)
        req.num_computed_tokens = req.num_tokens - 1
        kv.cache_finished(req)

    run(0, ["s1", "s2", "a3", "a4"])  # one extent s1..a4
    run(1, ["s1", "s2", "b3"])  # splits it at s2: s1-s2 -> {a3-a4, b3}; s1-s2 touched later than a3-a4
    assert [n.idents for n in kv.root.children["s1"].path()] == [["s1", "s2"]]
    big = make_request(2, 9 * BS, 1)
    big.kv_block_keys = tuple(f"z{i}" for i in range(9))
    assert kv.allocate_slots(big, 9 * BS)  # 9 blocks: the 5 free ones, then 4 evicted
    # oldest leaf first: a4, a3 (request 0's branch), then b3, then the shared extent loses
    # its last block (s2) and keeps s1
    assert _extent_paths(kv) == {("s1",)} and kv.tree_blocks == 1
    kv.free(big.id)
    kv.check_all_free()


@pytest.mark.parametrize("seed", range(4))
def test_a_stretchs_growth_evicts_at_once_what_grant_by_grant_takes_evict(seed):
    # `allocate_plain_many` takes the grants' sum in one eviction: against the same grants
    # taken one `allocate_plain` at a time, on a full tree of many leaves whose extents the
    # grants cut inside, the same blocks stay cached and each request holds the same blocks.
    import copy

    rng = random.Random(seed)
    kv = RadixKVCache(60, BS)
    growing = []
    for i in range(40):  # finished requests fill the tree; a few stay running
        req = make_request(i, rng.randrange(2, 9) * BS + 1, 1)
        req.kv_block_keys = _keys(rng)
        hits = kv.match(req)
        if kv.allocate_slots(req, req.prompt_len - len(hits) * BS, hits):
            req.num_computed_tokens = req.num_tokens - 1
            if len(growing) < 4 and rng.random() < 0.3:
                growing.append(req)
            else:
                kv.cache_finished(req)
    assert len(growing) >= 2 and kv._truly_free < 8 and kv.evictable_blocks > 8
    grants = [(req, rng.randrange(0, 4)) for req in growing]
    while sum(nb for _, nb in grants) <= kv._truly_free + 2:  # some eviction
        grants = [(req, nb + 1) for req, nb in grants]
    one = copy.deepcopy(kv)
    kv.allocate_plain_many(grants)
    for req, nb in grants:
        one.allocate_plain(req.id, nb)
    assert (kv.num_free_blocks, kv.evictable_blocks, kv.tree_blocks, kv._truly_free) == \
        (one.num_free_blocks, one.evictable_blocks, one.tree_blocks, one._truly_free)
    assert _extent_paths(kv) == _extent_paths(one)
    assert [kv.num_blocks_of(r.id) for r, _ in grants] == [one.num_blocks_of(r.id) for r, _ in grants]


def test_a_reservation_for_transferred_kv_is_the_requests_allocation_and_may_evict():
    kv = RadixKVCache(10, BS)
    old = make_request(0, 6 * BS + 1, 1)
    old.kv_block_keys = tuple(f"o{i}" for i in range(6))
    assert kv.allocate_slots(old, old.prompt_len)
    old.num_computed_tokens = old.num_tokens - 1
    kv.cache_finished(old)  # 6 blocks in the tree, unlocked: evictable, so counted as free
    assert kv.num_free_blocks == 10 and kv.tree_blocks == 6
    assert not kv.reserve(1, 11 * BS)  # more than the pool: refused, nothing changed
    assert kv.num_free_blocks == 10 and kv.tree_blocks == 6
    assert kv.reserve(1, 7 * BS + 3)  # 8 blocks: the 4 free ones, then 4 evicted from the tree
    assert kv.num_blocks_of(1) == 8 and kv.num_free_blocks == 2 and kv.tree_blocks == 2
    assert not kv.reserve(1, BS)  # already holds a reservation
    # it joins the batch: every per-request call knows it, as one the cache allocated
    req = make_request(1, 7 * BS + 3, 5)
    req.num_computed_tokens = req.prompt_len
    assert kv.num_blocks_list([req]) == [8]
    assert kv.allocate_slots(req, BS)  # its decodes grow it
    assert kv.num_blocks_of(1) == 9
    kv.cache_finished(req)
    kv.free(old.id)
    kv.check_all_free()


def test_a_handed_off_requests_blocks_stay_held_under_the_transfer_key_until_freed():
    kv = RadixKVCache(10, BS)
    req = make_request(0, 3 * BS + 1, 1)
    req.kv_block_keys = ("p0", "p1", "p2")
    assert kv.allocate_slots(req, req.prompt_len)
    req.num_computed_tokens = req.prompt_len
    kv.cache_unfinished(req)  # the prompt's 3 full blocks join the tree, locked by the request
    kv.detach(req.id, ("kv-out", req.id))
    kv.free(req.id)  # the scheduler lets the request go (`Scheduler.remove`): nothing to free
    assert kv.num_free_blocks == 6 and kv.num_blocks_of(("kv-out", req.id)) == 4
    kv.free(("kv-out", req.id))  # the receiver has the KV: the private block returns, the path unlocks
    assert kv.num_free_blocks == 10 and kv.tree_blocks == 3 and kv.evictable_blocks == 3
    kv.check_all_free()
