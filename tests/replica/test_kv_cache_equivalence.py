"""The run-based prefix cache answers exactly as the per-block one it replaced.

`kv_reference.py` is the previous implementation (one object per keyed block). Both are
driven with the same random vLLM-like life of requests sharing prefixes (admission with hits,
chunked prefill, decode, recompute preemption, finish, bulk decode, stretch conflict checks)
at several hash-block sizes, and every answer and the free-block count are compared after
each operation.
"""

from __future__ import annotations

import random

import pytest

from servesim.replica.block_keys import BlockKeys
from servesim.replica.packed_keys import range_bounds
from servesim.replica.kv_cache import KVCacheManager
from servesim.workload.prefix import IdRanges
from tests.factories import make_request
from tests.replica.kv_reference import ReferenceKVCache
from tests.replica.kv_reference import block_keys as reference_keys

BS = 16


def _chains(rng: random.Random, num_chains: int, length: int) -> list[list[int]]:
    """Chained hash ids that branch: each chain copies a prefix of an earlier one."""
    chains, next_id = [], 1
    for _ in range(num_chains):
        keep = rng.randrange(length) if chains else 0
        base = rng.choice(chains)[:keep] if chains else []
        fresh = list(range(next_id, next_id + length - len(base)))
        next_id += len(fresh)
        chains.append(base + fresh)
    return chains


class _Pair:
    """One request as each cache sees it (they differ only in the key object)."""

    def __init__(self, rid: int, prompt: int, output: int, ids: list[int], H: int, ranges: bool = False) -> None:
        self.new = make_request(rid, prompt, output, hash_ids=tuple(ids), hash_block_tokens=H)
        self.ref = make_request(rid, prompt, output, hash_ids=tuple(ids), hash_block_tokens=H)
        # (`ranges`: the ids as a generated workload gives them, an `IdRanges`, which the index's
        # record of diagonals reads: prefix_diagonals.py)
        self.new.kv_block_keys = BlockKeys(IdRanges(ids, range_bounds(tuple(ids), len(ids))) if ranges else ids, H, BS)
        self.ref.kv_block_keys = reference_keys(self.ref, BS)
        assert self.new.kv_block_keys.as_tuple() == self.ref.kv_block_keys

    def set(self, **kw) -> None:
        for r in (self.new, self.ref):
            for k, v in kw.items():
                setattr(r, k, v)


def _same_hits(new_hits, ref_hits) -> None:
    own = sum(1 for b in ref_hits if b.key is None)
    assert (new_hits.num_keyed, new_hits.num_own) == (len(ref_hits) - own, own)


def _decoding(req) -> bool:
    return req.num_output_tokens > 0 and req.num_tokens - req.num_computed_tokens == 1


def _run(seed: int, H: int, num_blocks: int, steps: int, ranges: bool = False, more_checks=None) -> dict[str, int]:
    rng = random.Random(seed)
    new, ref = KVCacheManager(num_blocks, BS), ReferenceKVCache(num_blocks, BS)
    chains = _chains(rng, 6, 24 * BS // H + 2)
    waiting: list[_Pair] = []
    running: list[_Pair] = []
    counts = dict.fromkeys(["hits", "preempt", "finish", "bulk", "bulk keys", "leading", "conflict", "planned",
                            "planned cut"], 0)
    rid = 0

    def check() -> None:
        assert new.num_free_blocks == ref.num_free_blocks
        # the invariant lookups rely on (`PrefixIndex._leading_runs_of`): a group's run keys
        # are exactly the keys the index maps to it (those in its dict and by diagonal), and
        # each key alone is found there
        prefix = new._prefix
        index = prefix.indexed()
        for g in set(index.values()):
            runs = prefix.group_runs(g)
            assert {rk for rk, h in index.items() if h is g} == set(runs) and len(set(runs)) == len(runs) == g.num_runs
            assert all(prefix._group_of_key(rk) is g for rk in runs)
        for p in running:
            assert new.num_blocks_of(p.new.id) == ref.num_blocks_of(p.ref.id)
        # each free-queue entry's live count is its slots still carrying its stamp (`Group.evict`
        # trusts it: an entry whose slots all do is evicted without reading their stamps)
        for stamp, g, s0, s1, live in new._queue.entries.values():
            assert live == list(g.stamp[s0 - g.lo:s1 - g.lo]).count(stamp)
        if more_checks is not None:
            more_checks(new, waiting + running)

    for _ in range(steps):
        op = rng.random()
        if op < 0.25:  # an arrival on a random chain, with a prompt ending anywhere in it
            ids = rng.choice(chains)
            prompt = rng.randrange(1, len(ids) * H + 1)
            waiting.append(_Pair(rid, prompt, rng.randrange(1, 24), ids[:-(-prompt // H)], H, ranges))
            rid += 1
        elif op < 0.45 and waiting and len(running) < 5:  # admit the head with its hits and a first chunk
            p = waiting[0]
            hn, hr = new.get_computed_blocks(p.new), ref.get_computed_blocks(p.ref)
            _same_hits(hn, hr)
            counts["hits"] += len(hr) > 0
            assert new.num_cached_prefix_tokens(p.new) == ref.num_cached_prefix_tokens(p.ref)
            n = min(p.new.num_tokens - len(hr) * BS, rng.choice([16, 64, 200, 10_000]))
            assert new.blocks_needed(p.new, n, hn) == ref.blocks_needed(p.ref, n, hr)
            ok = new.allocate_slots(p.new, n, hn)
            assert ok == ref.allocate_slots(p.ref, n, hr)
            if ok:
                waiting.pop(0)
                p.set(num_computed_tokens=len(hr) * BS + n)
                running.append(p)
        elif op < 0.75 and running:  # a step of everyone running: chunks or decodes
            batch = [p for p in running if p.new.num_computed_tokens < p.new.num_tokens]
            decodes = [p for p in batch if p.new.num_output_tokens and p.new.num_tokens - p.new.num_computed_tokens == 1]
            keyed = sum(h.num_keyed for h in new._held.values())  # registered blocks held
            if decodes and len(decodes) == len(batch) and new.allocate_decodes([p.new for p in batch]):
                counts["bulk"] += 1
                counts["bulk keys"] += sum(h.num_keyed for h in new._held.values()) > keyed
                assert all(ref.allocate_slots(p.ref, 1) for p in batch)
                for p in batch:
                    p.set(num_computed_tokens=p.new.num_computed_tokens + 1)
            else:
                # the leading decodes in one call (a running pass's fast path), the rest one by one
                lead = new.allocate_leading_decodes([p.new for p in batch]) if rng.random() < 0.7 else 0
                counts["leading"] += 0 < lead < len(batch)
                counts["bulk keys"] += sum(h.num_keyed for h in new._held.values()) > keyed
                for i, p in enumerate(batch):
                    n = 1 if i < lead else min(p.new.num_tokens - p.new.num_computed_tokens, rng.choice([1, 16, 100]))
                    ok = i < lead or new.allocate_slots(p.new, n)
                    assert ok == ref.allocate_slots(p.ref, n)
                    if ok:
                        p.set(num_computed_tokens=p.new.num_computed_tokens + n)
            for p in running:  # a token comes when the prompt (and what was generated) is computed
                if p.new.num_computed_tokens == p.new.num_tokens:
                    p.set(num_output_tokens=p.new.num_output_tokens + 1)
            for p in [p for p in running if p.new.num_output_tokens >= p.new.output_len]:
                running.remove(p)
                new.free(p.new.id), ref.free(p.ref.id)
                counts["finish"] += 1
        elif op < 0.8 and running:  # recompute preemption of the latest admitted
            p = running.pop()
            new.free_preempted(p.new), ref.free_preempted(p.ref)
            p.set(num_computed_tokens=0)
            waiting.insert(0, p)
            counts["preempt"] += 1
        elif rng.random() < 0.5 and (stretch := [p for p in running if _decoding(p.new)]):
            # a stretch of the decodes: its keys checked for k steps, then m <= k steps applied
            # (cut short) and registered by the plan the check kept
            lst = [(p.new, p.new.num_computed_tokens) for p in stretch]
            k = rng.choice([1, 16, 300])
            a = new.keys_conflict_many(lst, k)
            assert a == ref.keys_conflict_many([(p.ref, p.ref.num_computed_tokens + k) for p in stretch])
            counts["conflict"] += a
            m = min(k, rng.choice([1, 16, 300]), *(p.new.output_len - p.new.num_output_tokens for p in stretch))
            grants = [(p, -(-(c + m) // BS) - new.num_blocks_of(p.new.id)) for p, (_, c) in zip(stretch, lst)]
            grants = [(p, nb) for p, nb in grants if nb > 0]
            if not a and m > 0 and sum(nb for _, nb in grants) <= new.num_free_blocks:
                new.allocate_plain_many([(p.new, nb) for p, nb in grants])
                ref.allocate_plain_many([(p.ref, nb) for p, nb in grants])
                planned, keyed = new.num_planned_registrations, sum(h.num_keyed for h in new._held.values())
                new.cache_full_blocks_many(lst, m)
                # (the plan ran and registered blocks)
                ran = new.num_planned_registrations > planned and sum(h.num_keyed for h in new._held.values()) > keyed
                counts["planned"] += ran
                counts["planned cut"] += ran and m < k
                for p in stretch:
                    ref.cache_full_blocks(p.ref, p.ref.num_computed_tokens + m)
                    p.set(num_computed_tokens=p.new.num_computed_tokens + m,
                          num_output_tokens=p.new.num_output_tokens + m)
        elif running:  # would a stretch of k tokens for everyone register keys in conflict?
            k = rng.choice([1, 16, 300])
            pairs = [(p, p.new.num_computed_tokens + k) for p in running]
            a = new.keys_conflict_many([(p.new, t) for p, t in pairs])
            assert a == ref.keys_conflict_many([(p.ref, t) for p, t in pairs])
            counts["conflict"] += a
            if not a and rng.random() < 0.5:  # register them in bulk, as a stretch does
                capped = [(p, min(t, p.new.num_computed_tokens + 1)) for p, t in pairs]
                new.cache_full_blocks_many([(p.new, t - 1) for p, t in capped], 1)
                for p, t in capped:
                    ref.cache_full_blocks(p.ref, t)
        check()
    release_all(new, ref, running + waiting, check)
    return counts


def release_all(new: KVCacheManager, ref: ReferenceKVCache, pairs: list[_Pair], check) -> None:
    """Free every request left in both caches, then compare them and check that all is free."""
    for p in pairs:
        new.free(p.new.id), ref.free(p.ref.id)
    check()
    new.check_all_free()


@pytest.mark.parametrize("H", [16, 32, 64, 512])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_run_based_cache_matches_the_per_block_reference(H, seed):
    counts = _run(seed, H, num_blocks=100, steps=1500)
    # the scenario exercised what it is meant to: hits, preemptions, finishes, bulk decodes
    # (some registering keys), leading decodes allocated in one call before a prompt chunk
    assert counts["hits"] > 20 and counts["preempt"] > 20 and counts["finish"] > 5 and counts["bulk"] > 0
    assert counts["bulk keys"] > 0 and counts["leading"] > 0, counts


def test_stretches_register_by_the_plan_their_check_kept():
    """The random life above registers stretches of decodes by the plan their conflict check
    kept (compared with the reference there), whole and cut short (its sharing makes most
    checks conflict: counted over three runs)."""
    counts = [_run(seed, 512, num_blocks=100, steps=1500) for seed in (1, 2, 3)]
    assert sum(c["planned"] for c in counts) > 5 and sum(c["planned cut"] for c in counts) > 0, counts


def _decoding_pair(rid: int, ids: list[int], H: int, new: KVCacheManager, ref: ReferenceKVCache,
                   prompt: int) -> _Pair:
    """A request admitted with its whole prompt (no hits looked up) that has generated a token."""
    p = _Pair(rid, prompt, 40, ids, H)
    assert new.allocate_slots(p.new, prompt) and ref.allocate_slots(p.ref, prompt)
    p.set(num_computed_tokens=prompt, num_output_tokens=1)
    return p


@pytest.mark.parametrize("H", [16, 64])
@pytest.mark.parametrize("case", ["whole", "cut", "voided"])
def test_a_stretch_registers_by_the_plan_its_check_kept(H, case):
    """A stretch checks its keys when planned (here for 40 steps) and registers them when
    applied by the plan `keys_conflict_many` kept: whole, or trimmed to the steps it ran when
    cut short (20); a key entering the index in between voids the plan, and the registration
    takes the general path (here: the request's blocks are copies)."""
    ids = list(range(100, 100 + 12 * BS // H))  # keys for 12 blocks (prompt and answer)
    new, ref = KVCacheManager(64, BS), ReferenceKVCache(64, BS)
    a = _decoding_pair(1, ids, H, new, ref, 3 * BS - 1)  # 2 keyed blocks, its next token completes the 3rd
    c = a.new.num_computed_tokens
    keyed = [(a.new, c)]
    k, m = 40, 20 if case == "cut" else 40
    assert not new.keys_conflict_many(keyed, k) and not ref.keys_conflict_many([(a.ref, c + k)])
    if case == "voided":  # another request computes the same context, 6 blocks, first
        _decoding_pair(2, ids, H, new, ref, 6 * BS)
    grant = -(-(c + m) // BS) - new.num_blocks_of(1)
    new.allocate_plain_many([(a.new, grant)]), ref.allocate_plain_many([(a.ref, grant)])
    new.cache_full_blocks_many(keyed, m)
    ref.cache_full_blocks(a.ref, c + m)
    registered = (c + m) // BS
    assert new.num_planned_registrations == (case != "voided")
    assert new._held[1].num_keyed == registered and bool(new._held[1].dups) == (case == "voided")
    if case != "voided":  # the index holds the runs of the registered blocks, no more
        assert len(new._prefix.indexed()) == -(-registered // (H // BS))
    for r in (1, 2):
        new.free(r), ref.free(r)
        assert new.num_free_blocks == ref.num_free_blocks
    b = _Pair(3, 12 * BS - 1, 4, ids, H)
    hn, hr = new.get_computed_blocks(b.new), ref.get_computed_blocks(b.ref)
    _same_hits(hn, hr)
    assert len(hn) == (6 if case == "voided" else registered)
