"""Blocks a stretch's growth takes from the free queue ahead of its apply, for a read of the
prefix cache from outside (`Stretch.take_ahead`, `KVCacheManager.pop_ahead`): the keyed blocks
at the queue's head are evicted at once, the free count waits for the allocation, and the
allocation pops only what was not taken already."""

from __future__ import annotations

from servesim.replica.block_keys import block_keys
from servesim.replica.kv_cache import KVCacheManager
from tests.factories import make_request

BS = 16


def queued(kv: KVCacheManager) -> int:
    """Blocks in the free queue (its plain runs; the test's keyed entries are counted by the cache)."""
    return sum(e for e in kv._queue._q if type(e) is int) + sum(
        e[1].num_cached for e in kv._queue._q if type(e) is list)


def test_blocks_taken_ahead_evict_now_and_are_allocated_once():
    kv = KVCacheManager(6, BS)
    old = make_request(0, 4 * BS, 1, 0.0, hash_ids=(1, 2, 3, 4), hash_block_tokens=BS)
    old.kv_block_keys = block_keys(old, BS)
    assert kv.allocate_slots(old, 4 * BS)
    kv.free(old.id)  # (its four keyed blocks cached, behind the two never used)
    probe = make_request(1, 4 * BS, 1, 0.0, hash_ids=(1, 2, 3, 4), hash_block_tokens=BS)
    probe.kv_block_keys = block_keys(probe, BS)
    assert kv.num_cached_prefix_tokens(probe) == 4 * BS
    grower = make_request(2, BS, 8, 0.0)
    assert kv.allocate_slots(grower, BS)  # one plain block
    kv.pop_ahead(3)  # the plain one left and two of the cached (last blocks first)
    assert kv.num_free_blocks == 5 and queued(kv) == 2
    assert kv.num_cached_prefix_tokens(probe) == 2 * BS
    kv.allocate_plain_many([(grower, 3)], ahead=3)
    assert kv.num_free_blocks == 2 and queued(kv) == 2 and kv.num_blocks_of(grower.id) == 4
    kv.free(grower.id)
    kv.check_all_free()
    assert queued(kv) == 6


def test_more_taken_ahead_than_allocated_goes_back_to_the_queue():
    """A crash loses the step in flight: stepping had taken its blocks and frees them with
    everything else; the stretch applies fewer steps than the read took ahead for."""
    kv = KVCacheManager(8, BS)
    req = make_request(0, BS, 8, 0.0)
    assert kv.allocate_slots(req, BS)
    kv.pop_ahead(3)
    kv.allocate_plain_many([(req, 1)], ahead=3)
    assert kv.num_free_blocks == 6 and queued(kv) == 6
    kv.free(req.id)
    kv.check_all_free()
    assert queued(kv) == 8
