"""Recompute preemption hits the request's own surviving blocks, with or without trace hash ids
(vLLM hashes every full block of every request; issue 16, item 3)."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.replica.kv_cache import KVCacheManager
from servesim.workload.request import RequestState
from tests.factories import make_engine, make_request, serve


def _computed(req, num_tokens: int, num_output: int = 0):
    req.num_computed_tokens = num_tokens
    req.num_output_tokens = num_output
    return req


def test_preempted_request_hits_its_surviving_leading_blocks():
    kv = KVCacheManager(10, 16)
    a = make_request(0, 100, 10)
    assert kv.allocate_slots(a, 100)  # 7 blocks: 6 full, 1 partial
    _computed(a, 100, 1)  # num_tokens 101
    kv.free_preempted(a)
    assert kv.num_free_blocks == 10
    # free queue: 3 never used + a's partial block, then a's 6 full blocks (its last first)
    b = make_request(1, 96, 10)
    assert kv.allocate_slots(b, 96)  # 6 blocks: the 4 anonymous ones, then a's blocks 5 and 4
    a.num_computed_tokens = 0
    hits = kv.get_computed_blocks(a)
    assert (hits.num_keyed, hits.num_own) == (0, 4)  # blocks 0..3 survive
    assert kv.blocks_needed(a, 101 - 64, hits) == 7 > kv.num_free_blocks == 4
    kv.free(b.id)  # b finishes: its blocks are anonymous and enter behind a's survivors
    hits = kv.get_computed_blocks(a)
    assert len(hits) == 4
    assert kv.allocate_slots(a, 101 - 64, hits)
    assert kv.num_blocks_of(a.id) == 7 and kv.num_free_blocks == 3
    assert len(kv.get_computed_blocks(a)) == 0  # the run is consumed by the re-admission
    kv.free(a.id)
    kv.check_all_free()


def test_hits_are_capped_at_num_tokens_minus_one_and_need_the_whole_keyed_prefix():
    kv = KVCacheManager(20, 16)
    a = make_request(0, 64, 10, hash_ids=(7,), hash_block_tokens=32)
    a.kv_block_keys = ((7, 16), (7, 32))  # blocks 0-1 shared prefix, 2+ unique
    assert kv.allocate_slots(a, 64)
    _computed(a, 64, 0)  # preempted mid-prompt, its 64 prompt tokens computed: num_tokens 64
    kv.free_preempted(a)
    a.num_computed_tokens = 0
    hits = kv.get_computed_blocks(a)
    # 4 full blocks computed, but a hit leaves the last token to compute: 63 // 16 = 3 blocks
    assert (hits.num_keyed, hits.num_own) == (2, 1)  # keyed blocks 0-1, then own block 2
    # free queue: 16 never used, a's unique blocks 3 and 2, keyed block 1, keyed block 0
    kv.allocate_slots(make_request(1, 16 * 17, 1), 16 * 17)  # evicts block 3
    assert kv.get_computed_blocks(a).num_own == 1  # block 2 survives
    kv.allocate_slots(make_request(2, 16 * 2, 1), 16 * 2)  # evicts block 2 and keyed block 1
    hits = kv.get_computed_blocks(a)
    assert (hits.num_keyed, hits.num_own) == (1, 0)
    assert kv.num_free_blocks == 1


def test_finished_and_swapped_requests_leave_no_run():
    kv = KVCacheManager(10, 16)
    a = make_request(0, 64, 4)
    kv.allocate_slots(a, 64)
    _computed(a, 64, 1)
    kv.free(a.id)  # finished
    a.num_computed_tokens = 0
    assert len(kv.get_computed_blocks(a)) == 0


def test_recompute_after_preemption_hits_what_the_other_request_did_not_evict():
    # A (64 + 50) and B (48 + 50) in 10 blocks: B is preempted at 64 computed tokens (4 full
    # blocks, then a 5th needed). Re-admitting B needs 5 blocks while 4 are free: it waits for A.
    # A grows into a 7th and 8th block, evicting B's blocks 3 and 2; B comes back with 2 hit.
    engine, sched, kv, loop, done = make_engine(num_blocks=10, max_num_batched_tokens=64, fast_forward=False)
    a, b = make_request(0, 64, 50), make_request(1, 48, 50)
    serve(engine, loop, [a, b])
    assert b.num_preemptions == 1  # it thrashed 8 times when recompute never hit
    assert b.num_cached_tokens_total == 32 and kv.num_hit_tokens == 32
    assert a.state == b.state == RequestState.FINISHED
    kv.check_all_free()


def test_overloaded_trace_without_hash_ids_preempts_less_with_prefix_caching():
    from servesim import load_scenario, simulate

    def run(caching: bool):
        s = load_scenario("examples/azure-conv.yaml", [
            "workload.trace.speedup=6", "workload.trace.end_s=300", "engine.gpu_memory_utilization=0.3",
            f"engine.enable_prefix_caching={str(caching).lower()}"])
        return simulate(s).summary()

    on, off = run(True), run(False)
    # no request carries hash ids: recompute hits on their own blocks are the only difference
    # (253 preemptions and TTFT p50 33.96 s either way before they existed)
    assert on["prefix_cache_hit_rate"] > 0 == off["prefix_cache_hit_rate"]
    assert on["num_preemptions"] < off["num_preemptions"]
    assert on["ttft_s"]["p50"] < off["ttft_s"]["p50"]


def _random_requests(seed: int, own_hash_ids: bool):
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(0.03, 200))
    reqs = []
    for i in range(200):
        prompt, output = int(rng.integers(1, 300)), int(rng.integers(1, 300))
        kw = dict(hash_ids=tuple(range(i * 1000, i * 1000 + prompt // 16)), hash_block_tokens=16) if own_hash_ids else {}
        reqs.append(make_request(i, prompt, output, float(t[i]), **kw))
    return reqs


@pytest.mark.parametrize("fast_forward", [False, True])
def test_blocks_without_hash_ids_hit_as_if_each_request_had_its_own(fast_forward):
    """The tagged runs give what a trace with a unique hash id per prompt block gives."""
    runs = []
    for own in (False, True):
        reqs = _random_requests(7, own)
        engine, sched, kv, loop, done = make_engine(num_blocks=60, max_num_batched_tokens=256, max_num_seqs=16,
                                                    fast_forward=fast_forward)
        serve(engine, loop, reqs)
        kv.check_all_free()
        runs.append([(r.finish_s, r.token_steps, r.num_preemptions, r.num_cached_tokens_total) for r in reqs])
    assert runs[0] == runs[1]
    assert sum(r[3] for r in runs[0]) > 0 and sum(r[2] for r in runs[0]) > 20
