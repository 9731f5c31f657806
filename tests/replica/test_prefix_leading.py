"""The admission's prefix lookup (`PrefixIndex.leading_cached`) on Mooncake-like prompts: a
prompt sharing its first hash blocks with another prompt's group finds them from the group's
run list, without a dict lookup per run of the prompt, and answers as a lookup of every run."""

from __future__ import annotations

from servesim.replica.block_keys import BlockKeys
from servesim.replica.kv_cache import KVCacheManager
from tests.factories import CountingDict, make_request

BS, H = 16, 512  # Mooncake: 32 KV blocks per hash block
R = H // BS


def _request(rid: int, ids: list[int]):
    req = make_request(rid, len(ids) * H, 4, hash_ids=tuple(ids), hash_block_tokens=H)
    req.kv_block_keys = BlockKeys(req.hash_ids, H, BS)
    return req


def _cache_with(ids: list[int]) -> KVCacheManager:
    """A cache holding one finished prompt's blocks (cached, in the free queue)."""
    kv = KVCacheManager(4096, BS)
    kv._prefix._index = CountingDict()
    a = _request(0, ids)
    assert kv.allocate_slots(a, a.num_tokens, kv.get_computed_blocks(a))
    kv.cache_full_blocks(a, a.num_tokens)
    kv.free(a.id)
    return kv


def _reference(kv: KVCacheManager, req) -> int:
    """Leading cached blocks by a lookup of every run (`extents` from position 0)."""
    n = 0
    for g, p0, p1, _, _ in kv._prefix.extents(req.kv_block_keys, 0, len(req.kv_block_keys)):
        k = g.num_leading_cached(p0, p1) if g is not None else 0
        n += k
        if k < p1 - p0:
            break
    return n


def test_a_prompt_sharing_its_first_hash_blocks_looks_up_one_run_past_them():
    kv = _cache_with([0, 1, 2, 3, 4, 5, 6, 7])
    for ids, shared in (([0, 1, 9, 10, 11, 12], 2), ([0, 1, 2, 3, 4, 20], 5), ([0, 30, 31], 1),
                        ([0, 1, 2, 3, 4, 5, 6, 7, 8], 8), ([5, 6, 7], 0)):
        req = _request(len(ids), ids)
        CountingDict.gets = 0
        hits = kv.get_computed_blocks(req)
        # the first run's lookup, and (when the group's runs end before the prompt's) the next one's
        assert CountingDict.gets == (1 if shared == 0 else 2)
        assert hits.num_keyed == shared * R == _reference(kv, req)
        assert [(p0, p1) for _, p0, p1 in hits.extents] == ([(0, shared * R)] if shared else [])


def test_hits_stop_at_the_first_evicted_block_inside_the_shared_runs():
    kv = _cache_with([0, 1, 2, 3])
    kv._queue.pop(4096 - 4 * R)  # the plain blocks ...
    kv._queue.pop(R + 3)  # ... then the cached ones, last first: the third run loses its last 3
    req = _request(9, [0, 1, 2, 7])  # shares three runs with the group
    hits = kv.get_computed_blocks(req)
    assert hits.num_keyed == 3 * R - 3 == _reference(kv, req)


def test_requests_without_keys_share_one_empty_hit_that_allocation_leaves_as_it_is():
    """A request without prefix keys (a trace without hash ids) gets the one shared empty hit:
    no hit counted, its blocks allocated as with a fresh empty one, and the shared hit unchanged."""
    kv = KVCacheManager(64, BS)
    a, b = make_request(1, 40, 4), make_request(2, 40, 4)
    ha, hb = kv.get_computed_blocks(a), kv.get_computed_blocks(b)
    assert ha is hb and len(ha) == 0 and (ha.num_keyed, ha.num_own, ha.extents) == (0, 0, None)
    assert kv.allocate_slots(a, a.num_tokens, ha) and kv.allocate_slots(b, b.num_tokens, hb)
    assert kv.num_free_blocks == 64 - 2 * 3  # (40 tokens: 3 blocks of 16 each)
    assert (ha.num_keyed, ha.num_own, ha.extents) == (0, 0, None)
