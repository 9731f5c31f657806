"""Copies of cached blocks (`Held.dups`) as ranges of positions (`replica/copies.py`).

Policies that compute a cached context again without looking up its hits (sarathi, vtc, orca)
hold copies; their frees, the free counts a stretch logs (`blocks_freed`) and the cache's later
hits must be those of the per-block reference cache, whatever the ranges' shapes.
"""

from __future__ import annotations

import random
from array import array

import pytest

from servesim.replica.copies import add_copies, copies_within, has_copy
from servesim.replica.kv_cache import KVCacheManager
from servesim.replica.kv_release import _drops, _freed_with_copies, _left_one
from servesim.replica.prefix_groups import Group
from tests.replica.kv_reference import ReferenceKVCache
from tests.replica.test_kv_cache_equivalence import BS, _chains, _Pair, _same_hits


def test_ranges_merge_and_clip():
    assert add_copies(None, [(4, 6)]) == [(4, 6)]
    assert add_copies([(4, 6)], [(6, 8), (10, 12)]) == [(4, 8), (10, 12)]  # adjacent: one range
    assert add_copies([(10, 12)], [(2, 3), (11, 14)]) == [(2, 3), (10, 14)]  # out of order, overlapping
    dups = [(2, 5), (8, 9)]
    assert [p for p in range(10) if has_copy(dups, p)] == [2, 3, 4, 8] and not has_copy(None, 3)
    assert copies_within(dups, 3, 9) == [(3, 5), (8, 9)] and copies_within(dups, 5, 8) == []


def test_register_over_mixed_slots_returns_ranges():
    g = Group(0)
    g.append_held(10)
    g.release(0, 10, 1)
    g.evict(0, 10, 1, 3, 10)  # slots 7-9 evicted: not cached
    g.hit(0, 7)
    g.release(0, 7, 2)
    g.evict(0, 7, 2, 2, 7)  # slots 5-6 too
    assert g.register(3, 10) == [(3, 5)]  # 5-9 registered again, 3-4 were cached
    assert g.register(0, 10) == [(0, 10)]  # all cached: one range


def _life(seed: int, H: int, steps: int) -> dict:
    """Requests on branching chains allocated chunk by chunk without looking up their hits (a
    policy computing a cached context again), finishing in random order; after each operation
    the free counts equal the per-block reference's, and so do a probe's hits after each free
    and the blocks `blocks_freed` says a batch of finishes frees."""
    rng = random.Random(seed)
    chains = _chains(rng, 6, 12)
    new, ref = KVCacheManager(120, BS), ReferenceKVCache(120, BS)
    running: list[_Pair] = []
    counts = {"copies": 0, "ranges": 0, "batches": 0}
    rid = 0
    for _ in range(steps):
        op = rng.random()
        if op < 0.4 and len(running) < 6:
            ids = rng.choice(chains)
            prompt = rng.randrange(BS, len(ids) * H + 1)
            p = _Pair(rid, prompt, 4, ids[:-(-prompt // H)], H)
            rid += 1
            n = min(prompt, rng.choice([BS, 3 * BS, 1000]))
            ok = new.allocate_slots(p.new, n)
            assert ok == ref.allocate_slots(p.ref, n)
            if ok:
                p.set(num_computed_tokens=n)
                running.append(p)
        elif op < 0.7 and running:  # the next chunk of one of them
            p = rng.choice(running)
            n = min(p.new.num_tokens - p.new.num_computed_tokens, rng.choice([BS, 2 * BS, 1000]))
            if n > 0:
                ok = new.allocate_slots(p.new, n)
                assert ok == ref.allocate_slots(p.ref, n)
                if ok:
                    p.set(num_computed_tokens=p.new.num_computed_tokens + n)
        elif running:  # a few finish, in random order
            batch = rng.sample(running, rng.randint(1, min(3, len(running))))
            for p in batch:
                dups = new._held[p.new.id].dups
                counts["copies"] += bool(dups)
                counts["ranges"] += dups is not None and len(dups) > 1
            freed = new.blocks_freed([p.new.id for p in batch], {})
            counts["batches"] += len(batch) > 1
            for p, f in zip(batch, freed):
                before = ref.num_free_blocks
                running.remove(p)
                new.free(p.new.id), ref.free(p.ref.id)
                assert new.num_free_blocks == ref.num_free_blocks
                assert f == ref.num_free_blocks - before  # (counted in this order, after the earlier ones)
            probe = _Pair(10_000, len(chains[0]) * H - 1, 1, rng.choice(chains), H)
            _same_hits(new.get_computed_blocks(probe.new), ref.get_computed_blocks(probe.ref))
        assert new.num_free_blocks == ref.num_free_blocks
    return counts


@pytest.mark.parametrize("H", [16, 64])
def test_copies_free_as_the_per_block_reference(H):
    counts = [_life(seed, H, 600) for seed in range(4)]
    # copies were held, some in two ranges or more, and freed in batches
    assert sum(c["copies"] for c in counts) > 20 and sum(c["ranges"] for c in counts) > 0, counts
    assert sum(c["batches"] for c in counts) > 10, counts


def _freed_slot_by_slot(g, ref, p0, inside, dropped) -> int:
    """`_freed_with_copies` as it walked the segment before (a slot at a time): the reference."""
    drops = _drops(g, dropped)
    copies = {p for a, b in inside for p in range(a, b)}
    n = 0
    for p, c in enumerate(ref, p0):
        if p in copies:
            n += 1
            continue
        i = p - g.lo
        n += c - drops[i] == 1
        drops[i] += 1
    return n


@pytest.mark.parametrize("seed", range(6))
def test_freed_with_copies_by_ranges_counts_as_slot_by_slot(seed):
    """A segment's copies and shared slots counted a range at a time (list operations) give the
    slot-by-slot count and leave the same references dropped, whatever the copies' ranges
    (none, at either end, the whole segment) and the references earlier leavers dropped."""
    rng = random.Random(seed)
    for _ in range(200):
        size = rng.randint(1, 60)
        g = Group(rng.randint(0, 5))
        g.ref = array("i", [rng.randint(1, 4) for _ in range(size)])
        p0 = g.lo + rng.randint(0, size - 1)
        p1 = rng.randint(p0 + 1, g.lo + size)
        cuts = sorted(rng.sample(range(p0, p1 + 1), k=min(p1 - p0 + 1, 2 * rng.randint(0, 3))))
        inside = [(a, b) for a, b in zip(cuts[::2], cuts[1::2]) if a < b]
        inside = [r for i, r in enumerate(inside) if not (i and inside[i - 1][1] == r[0])]  # (never adjacent)
        first = rng.choice([None, ((0, size // 2),), ((0, size // 2), (size // 3, size)),
                            [rng.randint(0, 2) for _ in range(size)]])
        ref = g.ref[p0 - g.lo:p1 - g.lo]
        a, b = ({} if first is None else {g: list(first) if type(first) is list else first} for _ in range(2))
        assert _freed_with_copies(g, ref, p0, inside, a) == _freed_slot_by_slot(g, ref, p0, inside, b)
        assert a == b


@pytest.mark.parametrize("seed", range(4))
def test_drops_kept_as_ranges_count_as_slot_by_slot(seed):
    """The slots a leaver frees after earlier leavers' drops kept as ranges (`_left_one`: one
    reference less per range covering a slot) are those a slot-by-slot count finds."""
    rng = random.Random(seed)
    for _ in range(300):
        size = rng.randint(1, 50)
        ref = array("i", [rng.randint(1, 5) for _ in range(size)])
        prior = []
        for _ in range(rng.randint(1, 6)):
            a = rng.randint(0, size - 1)
            prior.append((a, rng.randint(a + 1, size)))
        i = rng.randint(0, size - 1)
        j = rng.randint(i + 1, size)
        expected = sum(1 for k in range(i, j) if ref[k] - sum(a <= k < b for a, b in prior) == 1)
        assert _left_one(ref[i:j], i, j, tuple(prior)) == expected
