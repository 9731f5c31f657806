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
