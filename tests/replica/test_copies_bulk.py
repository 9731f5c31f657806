"""Decodes of requests that hold unregistered copies take their tokens in bulk, as stepping would.

`vtc`, `sarathi` and `orca` admit a prompt whole without looking up prefix hits, so a next
turn's context is computed again: its blocks are copies of cached ones (`Held.dups`). Their
decodes then complete keyed blocks of their own (the answer's), which the bulk decode
allocation registers in one call (`PrefixIndex.plan_appends`) when the group they extend keeps
a block of the request (then no pop of the free queue can drop that group first). Driven
with random turns against the per-block reference cache (`kv_reference.py`).
"""

from __future__ import annotations

import random

from servesim.replica.block_keys import BlockKeys
from servesim.replica.kv_cache import KVCacheManager
from tests.factories import make_request
from tests.replica.kv_reference import ReferenceKVCache
from tests.replica.kv_reference import block_keys as reference_keys

BS = 16


def _pair(rid: int, prompt: int, output: int, ids: list[int], H: int):
    new = make_request(rid, prompt, output, hash_ids=tuple(ids), hash_block_tokens=H)
    ref = make_request(rid, prompt, output, hash_ids=tuple(ids), hash_block_tokens=H)
    new.kv_block_keys = BlockKeys(ids, H, BS)
    ref.kv_block_keys = reference_keys(ref, BS)
    return new, ref


def _run(seed: int, H: int, num_blocks: int, steps: int) -> dict[str, int]:
    rng = random.Random(seed)
    new, ref = KVCacheManager(num_blocks, BS), ReferenceKVCache(num_blocks, BS)
    # conversations: each turn's ids extend its previous turn's (context + answer + message)
    convs = [list(range(1000 * c, 1000 * c + 4)) for c in range(4)]
    running: list[tuple] = []
    counts = {"bulk": 0, "bulk copies": 0, "walk": 0, "finish": 0, "dropped": 0}
    rid = 0

    def check() -> None:
        assert new.num_free_blocks == ref.num_free_blocks
        index = new._prefix.indexed()
        for g in set(index.values()):
            assert {rk for rk, h in index.items() if h is g} == set(new._prefix.group_runs(g))
        for a, b in running:
            assert new.num_blocks_of(a.id) == ref.num_blocks_of(b.id)

    for _ in range(steps):
        if rng.random() < 0.2 and len(running) < 6:  # a next turn, admitted whole without hits
            ci = rng.randrange(len(convs))
            ids = convs[ci]
            output = rng.randrange(2, 60)
            prompt = len(ids) * H - rng.randrange(H)
            a, b = _pair(rid, prompt, output, ids + list(range(ids[-1] + 1, ids[-1] + 1 + -(-output // H) + 1)), H)
            rid += 1
            ok = new.allocate_slots(a, prompt)
            assert ok == ref.allocate_slots(b, prompt)
            if ok:
                for r in (a, b):
                    r.num_computed_tokens, r.num_output_tokens = prompt, 1
                a.extra["conv"] = ci
                running.append((a, b))
            continue
        if not running:
            continue
        held = [new._held[a.id] for a, _ in running]
        keyed = [h.num_keyed for h in held]
        lead = new.allocate_leading_decodes([a for a, _ in running])
        if lead:
            counts["bulk"] += 1
            # a request holding copies registered blocks in the bulk call
            counts["bulk copies"] += any(h.dups and h.num_keyed > k for h, k in zip(held[:lead], keyed))
        for i, (a, b) in enumerate(running):
            ok = i < lead or new.allocate_slots(a, 1)
            counts["walk"] += i >= lead
            assert ok == ref.allocate_slots(b, 1)
            if ok:
                for r in (a, b):
                    r.num_computed_tokens += 1
                    r.num_output_tokens += 1
            else:  # no block left: the request is dropped (its blocks go back to the pool)
                a.num_output_tokens = a.output_len
                counts["dropped"] += 1
        for a, b in [p for p in running if p[0].num_output_tokens >= p[0].output_len]:
            running.remove((a, b))
            new.free(a.id), ref.free(b.id)
            counts["finish"] += 1
            conv = convs[a.extra["conv"]]
            nxt = conv[-1] + 100 + rng.randrange(50)  # the next turn's message (a new conversation when long)
            conv[:] = list(a.hash_ids) + [nxt] if len(a.hash_ids) < 12 * BS // H else [nxt, nxt + 1]
        check()
    for c in convs:  # the same cached prefixes remain: a lookup of each conversation agrees
        a, b = _pair(rid, len(c) * H, 1, c, H)
        rid += 1
        assert new.get_computed_blocks(a).num_keyed == len(ref.get_computed_blocks(b))
    for a, b in running:
        new.free(a.id), ref.free(b.id)
    check()
    new.check_all_free()
    return counts


def test_decodes_of_requests_with_copies_register_in_bulk_as_stepping_would():
    counts = [_run(seed, H, num_blocks=60, steps=1500) for seed in (1, 2, 3) for H in (16, 64)]
    # the bulk path ran for requests holding copies and registered keys there; finishes
    # and pressure on the pool made the walk run too
    assert sum(c["bulk copies"] for c in counts) > 50 and all(c["finish"] > 20 for c in counts), counts
    assert sum(c["walk"] for c in counts) > 0, counts
