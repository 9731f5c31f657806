"""`PrefixIndex.extents` over a next turn's prompt registered again without a lookup (as
`sarathi`, `vtc` and `orca` do): the runs that continue the previous turn's group, in order, map
to it without a dict lookup each, and the extents are those of a lookup of every run."""

from __future__ import annotations

from servesim.replica.block_keys import BlockKeys
from servesim.replica.kv_cache import KVCacheManager
from tests.factories import CountingDict, make_request

BS = H = 16  # sessions: one KV block per hash block, a run per block


def _request(rid: int, ids: list[int]):
    req = make_request(rid, len(ids) * H, 4, hash_ids=tuple(ids), hash_block_tokens=H)
    req.kv_block_keys = BlockKeys(req.hash_ids, H, BS)
    return req


def _reference(kv: KVCacheManager, keys: BlockKeys, p0: int, p1: int) -> list[tuple]:
    """(group, first, end) of [p0, p1), from a lookup of every run (plain dict reads)."""
    gs = [dict.get(kv._prefix._index, k) for k in keys.run_keys.as_list()[p0:p1]]
    out: list[tuple] = []
    for p, g in enumerate(gs, p0):
        if out and out[-1][0] is g:
            out[-1] = (g, out[-1][1], p + 1)
        else:
            out.append((g, p, p + 1))
    return out


def _previous_turn(ids: list[int]) -> KVCacheManager:
    """A cache holding a finished turn's prompt, registered without a lookup (in the free queue)."""
    kv = KVCacheManager(4096, BS)
    kv._prefix._index = CountingDict()
    a = _request(0, ids)
    assert kv.allocate_slots(a, a.num_tokens)
    kv.free(a.id)
    return kv


def test_runs_continuing_the_previous_turns_group_are_not_looked_up():
    kv = _previous_turn(list(range(100)))
    for ids, p0, lookups in ((list(range(150)), 0, 1 + 50),  # the whole context, then 50 new runs
                             (list(range(150)), 32, 1 + 50),  # from inside the group
                             (list(range(60)) + list(range(200, 290)), 0, 1 + 90),  # shares 60, then 90 new runs
                             (list(range(80)), 10, 1)):  # inside the group: one lookup
        keys = _request(1, ids).kv_block_keys
        CountingDict.gets = 0
        exts = kv._prefix.extents(keys, p0, len(ids))
        assert CountingDict.gets == lookups
        assert [(g, a, b) for g, a, b, _, _ in exts] == _reference(kv, keys, p0, len(ids))
        assert [(i, j) for _, _, _, i, j in exts] == [(a, b) for _, a, b in _reference(kv, keys, p0, len(ids))]


def test_a_next_turn_registered_again_holds_copies_of_its_context():
    kv = _previous_turn(list(range(100)))
    b = _request(1, list(range(150)))
    assert kv.allocate_slots(b, b.num_tokens)  # (no lookup: the context is computed again)
    held = kv._held[b.id]
    assert held.dups == [(0, 100)] and held.num_keyed == 150
    assert [(p0, p1) for _, p0, p1 in held.segs] == [(0, 150)]  # (the new runs extend the group)
    kv.free(b.id)
    kv.check_all_free()
