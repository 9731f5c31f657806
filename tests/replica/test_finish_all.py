"""Finishes released in bulk (`Scheduler.finish_all`, `KVCacheManager.free_all`) leave the
scheduler and the KV cache as `finish` / `free` one request at a time do."""

from __future__ import annotations

import pytest

from factories import make_engine, make_request
from servesim.replica.kv_cache import KVCacheManager, block_keys


def _queue(kv: KVCacheManager) -> list:
    """The free queue's entries, comparable across two caches (a keyed entry by its slots)."""
    return [e if type(e) is int else (e[0], e[2], e[3]) if type(e) is list else (e.req_id, e.count) for e in kv._queue._q]


def _filled(order: list[int]) -> tuple[KVCacheManager, list]:
    """A cache holding requests 0..7 (prompt 13 + 9 i tokens; odd ones with prefix keys, two
    sharing their first block), freed later in `order`."""
    kv = KVCacheManager(200, 4)
    reqs = []
    for i in range(8):
        ids = (1000 + (i > 4), 2000 + i, 3000 + i) if i % 2 else ()
        req = make_request(i, 13 + 9 * i, 5, hash_ids=ids, hash_block_tokens=4)
        if ids:
            req.kv_block_keys = block_keys(req, 4)
        assert kv.allocate_slots(req, req.prompt_len, kv.get_computed_blocks(req))
        kv.cache_full_blocks(req, req.prompt_len)
        reqs.append(req)
    return kv, [reqs[i].id for i in order]


@pytest.mark.parametrize("order", [[0, 2, 4, 6, 1, 3, 5, 7], [7, 0, 2, 5, 4, 6, 1, 3], [6, 4, 2, 0]])
def test_free_all_leaves_the_queue_as_free_one_at_a_time(order):
    one, ids = _filled(order)
    for rid in ids:
        one.free(rid)
    bulk, ids = _filled(order)
    calls = []
    free = bulk.free
    bulk.free = lambda rid: (calls.append(rid), free(rid))
    bulk.free_all(ids)
    assert _queue(bulk) == _queue(one)
    assert bulk.num_free_blocks == one.num_free_blocks and set(bulk._held) == set(one._held)
    assert calls == [rid for rid in ids if rid % 2]  # the plain ones went in bulk, none freed one by one
    for kv in (one, bulk):  # the next allocations pop the same blocks
        assert kv.allocate_slots(make_request(99, 150, 4), 150)
    assert _queue(bulk) == _queue(one)


def test_finish_all_keeps_the_running_order_and_checks_membership():
    engine, sched, kv, _, _ = make_engine(num_blocks=64, block_size=4)
    reqs = [make_request(i, 5 + i, 3) for i in range(6)]
    for req in reqs:
        assert kv.allocate_slots(req, req.prompt_len)
        sched.running.append(req)
    running = sched.running
    sched.finish_all([reqs[4], reqs[1], reqs[2]], 0.0)
    assert sched.running is running and running == [reqs[0], reqs[3], reqs[5]]
    assert sorted(kv._held) == [0, 3, 5]
    with pytest.raises(ValueError, match="not running"):
        sched.finish_all([reqs[0], reqs[1]], 0.0)
