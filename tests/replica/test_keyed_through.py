"""Stretches with prefix keys run through finishes (open loop), exactly as stepping.

A finish processed late must leave the KV cache and the step log as stepping's finish did:
each request registers its keyed blocks up to its own last step, and a finish frees only the
blocks whose last reference it drops (`KVCacheManager.blocks_freed`): a prefix block another
running request hit stays in use.
"""

from __future__ import annotations

import numpy as np
import pytest

from servesim.replica.block_keys import BlockKeys
from servesim.replica.kv_cache import KVCacheManager
from servesim.replica.kv_release import BlockRelease
from tests.factories import ToyPerf, assert_same_run, make_engine, make_request, serve

BS = 16


def keyed_requests(seed: int, n: int = 250):
    """Every request keyed, from a few shared prefixes (running requests share blocks), some
    keys covering the output too (decodes register blocks)."""
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(0.2, n))
    reqs = []
    for i in range(n):
        base = int(rng.integers(0, 3)) * 100
        ids = tuple(range(base, base + int(rng.integers(2, 12))))
        reqs.append(make_request(i, int(rng.integers(20, 300)), int(rng.integers(2, 200)), float(t[i]),
                                 hash_ids=ids, hash_block_tokens=32))
    return reqs


def run(reqs, fast_forward: bool, defer: bool, num_blocks: int):
    engine, _, kv, loop, _ = make_engine(num_blocks=num_blocks, max_num_batched_tokens=256, max_num_seqs=16,
                                         fast_forward=fast_forward, perf=ToyPerf(), defer_finishes=defer)
    serve(engine, loop, reqs)
    kv.check_all_free()
    return engine


@pytest.mark.parametrize("seed,num_blocks", [(1, 3000), (2, 400), (3, 150)])
def test_keyed_stretches_through_finishes_match_stepping(seed, num_blocks, monkeypatch):
    shared = []  # finishes inside a stretch that left some of their blocks in use

    def counting(kv, req_ids, dropped):
        freed = BlockRelease.blocks_freed(kv, req_ids, dropped)
        shared.extend(1 for rid, n in zip(req_ids, freed) if n < kv.num_blocks_of(rid))
        return freed

    monkeypatch.setattr(KVCacheManager, "blocks_freed", counting)
    a_reqs, b_reqs, c_reqs = keyed_requests(seed), keyed_requests(seed), keyed_requests(seed)
    a = run(a_reqs, True, True, num_blocks)
    b = run(b_reqs, False, False, num_blocks)
    c = run(c_reqs, True, False, num_blocks)
    assert a.loop.num_events < 0.8 * c.loop.num_events  # the stretches ran past finishes
    assert shared  # and some finishes inside them dropped shared prefix blocks
    assert_same_run(a, b, a_reqs, b_reqs, num_blocks, ("finish_s", "first_token_s", "token_steps",
                                                        "num_preemptions", "num_cached_tokens"))
    assert a.kv.num_hit_tokens == b.kv.num_hit_tokens > 0


def test_blocks_freed_counts_the_last_reference_only():
    kv = KVCacheManager(100, BS)
    ids = (1, 2)  # two 32-token hash blocks: 4 keyed KV blocks
    reqs = [make_request(i, p, 10, hash_ids=ids, hash_block_tokens=32) for i, p in enumerate((80, 80, 40))]
    for r in reqs:
        r.kv_block_keys = BlockKeys(list(ids), 32, BS)
    a, b, c = reqs
    assert kv.allocate_slots(a, 80)  # 5 blocks: 4 keyed (registered), 1 plain
    a.num_computed_tokens = 80
    hits = kv.get_computed_blocks(b)
    assert hits.num_keyed == 4 and kv.allocate_slots(b, 80 - 64, hits)  # b holds a's 4 keyed blocks + 1 plain
    hits = kv.get_computed_blocks(c)
    assert hits.num_keyed == 2 and kv.allocate_slots(c, 40 - 32, hits)  # c: 3 blocks, 2 of them a's keyed ones
    assert [kv.num_blocks_of(r.id) for r in reqs] == [5, 5, 3]
    assert kv.blocks_freed([0, 1, 2], {}) == [1, 3, 3]  # a drops none of the shared, b the two c lacks
    assert kv.blocks_freed([2, 1, 0], {}) == [1, 1, 5]
    dropped = {}  # counted in two calls, on from the first's drops
    assert kv.blocks_freed([2], dropped) + kv.blocks_freed([1, 0], dropped) == [1, 1, 5]
    before = kv.num_free_blocks
    freed = []
    for r in (a, b, c):  # freeing for real adds what was counted
        kv.free(r.id)
        freed.append(kv.num_free_blocks - before)
        before = kv.num_free_blocks
    assert freed == [1, 3, 3]
