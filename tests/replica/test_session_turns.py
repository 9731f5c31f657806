"""Conversations' turns through the prefix cache, against the per-block reference.

Each turn's hash ids are its previous turn's plus a fresh range (as `HashIds.extend` makes
them; follow-up ids from 2**48, so their run keys are past a C long), its contexts long enough
for the scans by numpy (`Group.evict`), and the cache small enough that other conversations
evict a context between its turns (partial hits, misses, stale free-queue entries: emptied by a
next turn's hit, passed over by the pops without a search). Turns are preempted and admitted again. Every answer (hits,
blocks needed, admission) and the free count are compared with `kv_reference.py` after each
operation, and the new paths are counted (spies) so the test fails if they stop running.
"""

from __future__ import annotations

import random

import pytest

from servesim.replica import prefix_groups
from servesim.replica.kv_cache import KVCacheManager
from servesim.workload.prefix import FOLLOW_UP_IDS
from tests.replica.test_kv_cache_equivalence import _Pair, _same_hits, release_all
from tests.replica.kv_reference import ReferenceKVCache

BS = 16


@pytest.fixture
def spies(monkeypatch):
    """Counts of the paths this file checks: a lookup answered without a scan (every slot of
    the group cached), free-queue entries a hit emptied (`FreeQueue`'s live counts: the pops
    pass them over) and entries partly hit, scanned by numpy. (`FreeQueue.head_evicts` is
    checked by the keyed joins' tests.)"""
    counts = dict.fromkeys(["leading whole", "entries emptied by hits", "evict scans by numpy"], 0)
    G = prefix_groups.Group
    leading, evict = G.num_leading_cached, G.evict

    def num_leading_cached(self, s0, s1):
        counts["leading whole"] += self.num_cached == len(self.ref) and s1 - s0 >= prefix_groups._NP_MIN
        return leading(self, s0, s1)

    def evict_spy(self, s0, s1, stamp, n, live):
        i, j = s0 - self.lo, s1 - self.lo
        k = min(n, j - i)
        counts["evict scans by numpy"] += (live != j - i and j - i >= prefix_groups._NP_MIN
                                           and self.stamp[j - k:j] != prefix_groups.array("q", [stamp]) * k)
        return evict(self, s0, s1, stamp, n, live)

    leave = prefix_groups._leave

    def leave_spy(queued, stamps):
        leave(queued, stamps)
        counts["entries emptied by hits"] += sum(1 for t in set(stamps) if not queued[t][4])

    monkeypatch.setattr(prefix_groups, "_leave", leave_spy)
    monkeypatch.setattr(G, "num_leading_cached", num_leading_cached)
    monkeypatch.setattr(G, "evict", evict_spy)
    return counts


def _conversations(seed: int, num_blocks: int, steps: int) -> dict[str, int]:
    rng = random.Random(seed)
    new, ref = KVCacheManager(num_blocks, BS), ReferenceKVCache(num_blocks, BS)
    first_ids, follow_ids = 1, FOLLOW_UP_IDS
    sessions: list[tuple] = []  # (ids, tokens) of each conversation's context so far
    waiting: list[_Pair] = []
    running: list[_Pair] = []
    context_of: dict[int, int] = {}  # turn id -> keyed blocks of its previous turn's context
    counts = dict.fromkeys(["turns", "whole hits", "partial hits", "misses", "preempted", "finished"], 0)
    rid = 0

    def check() -> None:
        assert new.num_free_blocks == ref.num_free_blocks
        for t in running:
            assert new.num_blocks_of(t.new.id) == ref.num_blocks_of(t.ref.id)

    for _ in range(steps):
        op = rng.random()
        if op < 0.2 and len(waiting) < 4:  # a turn: a new conversation, or the next turn of one
            if sessions and rng.random() < 0.7:
                ids, tokens = sessions.pop(rng.randrange(len(sessions)))
                context_of[rid] = len(ids)
            else:
                n = rng.randrange(40, 90)
                ids, tokens = tuple(range(first_ids, first_ids + n)), n * BS
                first_ids += n
            prompt = tokens + rng.randrange(1, 40 * BS)  # the context and a new message
            output = rng.randrange(1, 3 * BS)
            n_new = (prompt + output) // BS - len(ids)  # ids cover prompt and answer
            ids += tuple(range(follow_ids, follow_ids + n_new))
            follow_ids += n_new
            waiting.append(_Pair(rid, prompt, output, ids, BS))
            rid += 1
        elif op < 0.5 and waiting:  # admit the head whole, with its hits
            t = waiting[0]
            hn, hr = new.get_computed_blocks(t.new), ref.get_computed_blocks(t.ref)
            _same_hits(hn, hr)
            n = t.new.num_tokens - len(hr) * BS
            assert new.blocks_needed(t.new, n, hn) == ref.blocks_needed(t.ref, n, hr)
            ok = new.allocate_slots(t.new, n, hn)
            assert ok == ref.allocate_slots(t.ref, n, hr)
            if ok:
                waiting.pop(0)
                t.set(num_computed_tokens=t.new.num_tokens)
                running.append(t)
                counts["turns"] += 1
                prev = context_of.pop(t.new.id, None)
                if prev is not None:
                    limit = min(prev, (t.new.num_tokens - 1) // BS)
                    counts["whole hits"] += hn.num_keyed >= limit
                    counts["partial hits"] += 0 < hn.num_keyed < limit
                    counts["misses"] += hn.num_keyed == 0
        elif op < 0.97 and running:  # a decode step of everyone running
            for t in running:
                if t.new.num_computed_tokens == t.new.num_tokens:
                    t.set(num_output_tokens=t.new.num_output_tokens + 1)
            for t in [t for t in running if t.new.num_output_tokens >= t.new.output_len]:
                running.remove(t)
                new.free(t.new.id), ref.free(t.ref.id)
                if len(t.new.hash_ids) < 200:  # (else the conversation ends)
                    sessions.append((t.new.hash_ids, t.new.prompt_len + t.new.output_len))
                counts["finished"] += 1
            for t in running:
                ok = new.allocate_slots(t.new, 1)
                assert ok == ref.allocate_slots(t.ref, 1)
                if not ok:  # no room: preempted (recomputed later, with its hits)
                    break
                t.set(num_computed_tokens=t.new.num_computed_tokens + 1)
        elif running:  # recompute preemption of the latest admitted
            t = running.pop()
            new.free_preempted(t.new), ref.free_preempted(t.ref)
            t.set(num_computed_tokens=0)
            waiting.insert(0, t)
            counts["preempted"] += 1
        check()
    release_all(new, ref, running + waiting, check)
    return counts


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_next_turns_hit_as_the_per_block_reference(seed, spies):
    counts = _conversations(seed, num_blocks=1500, steps=2500)
    # next turns hit their whole context, part of it (evicted since) or none of it; turns were
    # preempted and admitted again; and the paths this round added ran
    assert counts["whole hits"] > 10 and counts["partial hits"] > 0 and counts["misses"] > 0, counts
    assert counts["preempted"] > 5 and counts["finished"] > 30, counts
    assert spies["leading whole"] > 10 and spies["entries emptied by hits"] > 10, spies
    assert spies["evict scans by numpy"] > 0, spies
