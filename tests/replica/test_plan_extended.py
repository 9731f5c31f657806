"""A stretch's registration plan made whole and extended by a joining request
(`KVCacheManager.keys_conflict_many(..., whole=True)`, `PrefixIndex.plan_appends` with a base),
and `PrefixIndex.unindexed`'s answer reused by `_register_new` only while no key entered."""

from __future__ import annotations

from servesim.replica.block_keys import BlockKeys
from servesim.replica.kv_cache import KVCacheManager
from servesim.replica.kv_prefix_caching import WHOLE
from servesim.replica.prefix_index import Held, PrefixIndex
from tests.factories import make_request

BS = 16


def _turn(rid: int, first_id: int, prompt_blocks: int, output: int):
    """A request whose ids cover its prompt and output, one key run per block."""
    ids = list(range(first_id, first_id + prompt_blocks + -(-output // BS) + 1))
    req = make_request(rid, prompt_blocks * BS, output, hash_ids=tuple(ids), hash_block_tokens=BS)
    req.kv_block_keys = BlockKeys(ids, BS, BS)
    return req


def _admitted(kv: KVCacheManager, reqs) -> None:
    for req in reqs:
        assert kv.allocate_slots(req, req.prompt_len)
        req.num_computed_tokens = req.prompt_len


def _registered(kv: KVCacheManager) -> dict:
    """Each indexed run key -> the lowest slot of its group (the index, without group identities)."""
    return {key: g.lo for key, g in kv._prefix.indexed().items()}


def test_a_join_extends_the_whole_plan_and_it_registers_as_one_plan_of_all():
    a, b, c = _turn(0, 100, 3, 70), _turn(1, 200, 2, 40), _turn(2, 300, 4, 90)
    kv = KVCacheManager(200, BS)
    _admitted(kv, [a, b])
    lst = [(a, a.prompt_len), (b, b.prompt_len)]
    last = [a.output_len - 1, b.output_len - 1]
    assert not kv.keys_conflict_many(lst, 5, last, whole=True)
    planned = kv._planned
    assert planned[2] == WHOLE and len(planned[4][0]) == 2
    _admitted(kv, [c])  # (c's prompt registers: keys the plan does not hold, so it stays valid)
    kv._planned = (*planned[:3], kv._prefix.num_inserts, *planned[4:])
    lst.append((c, c.prompt_len))
    last.append(c.output_len - 1)
    assert not kv.keys_conflict_many(lst, 50, last, whole=True)
    assert kv._planned[4][0] is planned[4][0] and len(planned[4][0]) == 3  # extended in place, not planned again
    # 50 steps: a and b register up to their last step, c up to its 50th token
    grants = [(r, -(-(r.prompt_len + min(50, m)) // BS) - kv.num_blocks_of(r.id)) for (r, _), m in zip(lst, last)]
    kv.allocate_plain_many(grants)
    kv.cache_full_blocks_many(lst, 50, last)
    assert kv.num_planned_registrations == 1

    # the same registrations request by request, on a fresh cache
    ref = KVCacheManager(200, BS)
    a2, b2, c2 = _turn(0, 100, 3, 70), _turn(1, 200, 2, 40), _turn(2, 300, 4, 90)
    _admitted(ref, [a2, b2, c2])
    for r, m in zip((a2, b2, c2), last):
        total = r.prompt_len + min(50, m)
        assert ref.allocate_slots(r, total - r.num_computed_tokens)
        ref.cache_full_blocks(r, total)
    assert _registered(kv) == _registered(ref)
    assert [kv.num_blocks_of(i) for i in range(3)] == [ref.num_blocks_of(i) for i in range(3)]
    assert kv.num_free_blocks == ref.num_free_blocks


def test_a_joiner_meeting_the_plan_is_not_added_and_the_steps_asked_are_checked():
    """c's decodes would register a key b's decodes register too: the whole plan fails, and the
    exact check of the steps asked for answers (no conflict within 10 steps, one within 40)."""
    a, b = _turn(0, 100, 3, 70), _turn(1, 200, 2, 40)
    kv = KVCacheManager(200, BS)
    _admitted(kv, [a, b])
    ids = [900, 901, 202, 203]  # (a run key is (id, position): c's third block has b's third key)
    c = make_request(2, 2 * BS, 40, hash_ids=tuple(ids), hash_block_tokens=BS)
    c.kv_block_keys = BlockKeys(ids, BS, BS)
    _admitted(kv, [c])
    lst = [(a, a.prompt_len), (b, b.prompt_len), (c, c.prompt_len)]
    last = [69, 39, 39]
    assert not kv.keys_conflict_many(lst, 10, last)  # (b's and c's third blocks complete at step 16)
    conflicts_late = kv.keys_conflict_many(lst, 40, last, whole=True)
    assert conflicts_late == kv._prefix.conflicts(
        [(r.kv_block_keys, kv._held[r.id].num_keyed, (n + min(40, m)) // BS) for (r, n), m in zip(lst, last)])
    assert conflicts_late and kv._planned is None


def test_unindexed_is_reused_only_until_a_key_enters():
    p = PrefixIndex()
    keys = BlockKeys([1, 2, 3, 4], BS, BS)
    assert p.unindexed(keys, 0, 4) is not None
    # a request with the same first two blocks registers them first: the answer is stale
    p.register(BlockKeys([1, 2], BS, BS), Held(), 0, 2)
    assert not p._register_new(keys, Held(), 0, 4)  # (looked up again: two runs are indexed)
    assert p.unindexed(keys, 0, 4) is None
    assert p.unindexed(keys, 2, 4) is not None
    held = Held()
    held.segs.append([p.indexed()[BlockKeys([1, 2], BS, BS).run_keys.as_list()[1]], 0, 2])
    assert p._register_new(keys, held, 2, 4)  # (the answer reused: nothing entered since)
