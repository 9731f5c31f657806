"""SGLang's stretches through finishes over its radix cache, their growth and their finishes'
releases applied in step order (`replica/ordered_frees.py`): the same runs as stepping, step
log included, while the tree fills the cache and evicts."""

from __future__ import annotations

from pathlib import Path

import pytest

from servesim import load_scenario, simulate
from servesim.replica import ordered_frees, stretch_apply
from servesim.replica.radix_cache import RadixKVCache
from servesim.workload.request import Request
from tests.cluster.helpers import assert_same_steps, outcome

ROOT = Path(__file__).resolve().parents[2]


def _count_in_order(monkeypatch) -> list[int]:
    """The finishes each stretch applied in order released (one entry per such stretch)."""
    applied = []
    allocate = ordered_frees.allocate_in_order

    def counted(kv, st, steps_of, finished, block_size):
        applied.append(len(finished))
        return allocate(kv, st, steps_of, finished, block_size)

    monkeypatch.setattr(stretch_apply, "allocate_in_order", counted)
    return applied


def _count_evictions(monkeypatch) -> list[int]:
    evicted = []
    evict = RadixKVCache._evict
    monkeypatch.setattr(RadixKVCache, "_evict", lambda self, n: (evicted.append(n), evict(self, n))[1])
    return evicted


@pytest.mark.parametrize("example,sets", [
    ("sessions.yaml", ["workload.num_requests=400", "engine.gpu_memory_utilization=0.3"]),
    ("sessions.yaml", ["workload.num_requests=500", "workload.arrival.rate_per_s=1.5", "replicas=3",
                       "router.name=least-requests", "engine.gpu_memory_utilization=0.3"]),
    ("mooncake.yaml", ["workload.trace.end_s=120", "engine.gpu_memory_utilization=0.4"]),
])
def test_sglang_stretches_run_through_finishes_as_stepping(example, sets, monkeypatch):
    """Conversations (closed loop, each finish told at its time) and Mooncake's shared prefixes
    under memory pressure: the tree fills the cache, the stretches run through finishes, each
    run of steps between departures evicts for its growth before the next finish inserts into
    the tree, and the requests (their prefix hits included) and the step log are stepping's."""
    path = str(ROOT / "examples" / example)
    sets = ["scheduler.name=sglang", *sets]
    applied = _count_in_order(monkeypatch)
    evicted = _count_evictions(monkeypatch)
    fast = simulate(load_scenario(path, sets), keep_steps=True)
    released = sum(applied)
    assert len(applied) >= 15 and released > 1.5 * len(applied), (len(applied), released)
    assert evicted, "the tree never evicted: the order of growth and releases was not exercised"
    applied.clear()
    slow = simulate(load_scenario(path, sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert not applied
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)


def test_no_stretch_through_finishes_while_a_router_reads_the_tree(monkeypatch):
    """A router that reads the replicas' caches would see the tree without the inserts of
    finishes a stretch processes late: SGLang's stretches stop at finishes there, as before."""
    path = str(ROOT / "examples" / "sessions.yaml")
    sets = ["scheduler.name=sglang", "workload.num_requests=300", "replicas=2", "router.name=dynamo-kv",
            "engine.gpu_memory_utilization=0.3"]
    applied = _count_in_order(monkeypatch)
    fast = simulate(load_scenario(path, sets), keep_steps=True)
    assert not applied
    slow = simulate(load_scenario(path, sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)


def test_blocks_freed_counts_a_shared_path_once_for_its_last_holder():
    """Two requests hold the same cached prefix: the first to leave frees only its private
    blocks, the second also the path; `blocks_freed` changes nothing."""
    kv = RadixKVCache(64, block_size=4)
    keys = list(range(8))
    first = Request(id=0, arrival_s=0.0, prompt_len=32, output_len=4, hash_ids=None)
    first.kv_block_keys = keys
    assert kv.allocate_slots(first, 32)
    first.num_computed_tokens = 32
    kv.cache_finished(first)  # (its 8 blocks enter the tree, evictable)
    a, b = (Request(id=i, arrival_s=0.0, prompt_len=36, output_len=4, hash_ids=None) for i in (1, 2))
    for req in (a, b):
        req.kv_block_keys = keys + [100 + req.id]
        hits = kv.match(req)
        assert len(hits) == 8
        assert kv.allocate_slots(req, 4, hits)  # (its own ninth block)
    free = kv.num_free_blocks
    assert kv.blocks_freed([1, 2], {}) == [1, 1 + 8]
    assert kv.blocks_freed([2], {}) == [1]  # (alone: the path stays held by the other)
    assert kv.num_free_blocks == free
    for req in (a, b):
        req.num_computed_tokens = 36
    kv.cache_finished(a)
    assert kv.num_free_blocks == free + 1
    kv.cache_finished(b)
    assert kv.num_free_blocks == free + 1 + 1 + 8  # (b's ninth block enters the tree, evictable; the path unlocked)
