"""BatchLLM driven step by step: prefix groups, decode-ratio order, memory-centric batching."""

from __future__ import annotations

from tests.factories import make_engine, make_request
from tests.replica.test_vllm_scheduler import run_logged


def _req(i, prompt, output, hash_ids):
    return make_request(i, prompt, output, hash_ids=hash_ids, hash_block_tokens=16)


def test_groups_run_in_decode_ratio_order_and_share_their_prefix():
    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="batchllm", max_num_seqs=2,
                                                fast_forward=False)
    # 0 and 2 share their first 16-token block; ratios: 1 -> 1.0, 3 -> 0.2, {0, 2} -> 0.1.
    reqs = [_req(0, 40, 4, (1, 2)), _req(1, 20, 20, (7,)), _req(2, 40, 4, (1, 3)), _req(3, 40, 8, (5,))]
    steps = run_logged(engine, loop, reqs)
    assert steps[0] == [(1, 20), (3, 40)]  # no token budget: whole prompts
    assert steps[8] == [(1, 1), (0, 40)]
    assert steps[12] == [(1, 1), (2, 24)]  # the group's shared block is still cached: 16 hit tokens
    assert kv.num_hit_tokens == 16


def test_group_of_deepest_shared_prefix():
    engine, sched, *_ = make_engine(scheduler="batchllm")
    a, b, c, d = (make_request(i, 8, 1) for i in range(4))
    a.kv_block_keys, b.kv_block_keys = ("x", "y", "a"), ("x", "y", "b")
    c.kv_block_keys, d.kv_block_keys = ("x", "c"), ("z",)
    groups = sched.groups([a, b, c, d])
    assert groups["y"] == [a, b] and groups["x"] == [c] and groups[("alone", 3)] == [d]


def test_admission_stops_at_the_memory_threshold():
    # Each request ends at 64 tokens = 4 blocks; 90% of 10 blocks = 9 admits two at a time.
    engine, sched, kv, loop, done = make_engine(num_blocks=10, scheduler="batchllm", fast_forward=False,
                                                params={"mem_threshold": 0.9})
    steps = run_logged(engine, loop, [make_request(i, 32, 32) for i in range(4)])
    assert steps[0] == [(0, 32), (1, 32)]
    assert all(s == [(0, 1), (1, 1)] for s in steps[1:32])
    assert steps[32] == [(2, 32), (3, 32)]
    assert all(r.num_preemptions == 0 for r in done)


def test_the_kept_plan_orders_the_queue_as_a_plan_from_scratch():
    """Keys fixed at entry (no prefix keys) and regrouping of the keyed part only give the
    order of ranking every group of the whole waiting set again (the former `_replan`)."""
    import numpy as np

    engine, sched, *_ = make_engine(scheduler="batchllm")
    rng = np.random.default_rng(3)
    reqs = []
    for i in range(60):
        r = make_request(i, int(rng.integers(1, 200)), int(rng.integers(1, 200)), float(i))
        if rng.random() < 0.5:  # prefixes from a small tree: some shared, some not
            r.kv_block_keys = tuple(("k", int(rng.integers(0, 3)), j) for j in range(int(rng.integers(1, 4))))
        reqs.append(r)

    def from_scratch():
        ranked = sorted((-sum(r.output_len for r in m) / max(sum(r.prompt_len for r in m), 1),
                         min(r.arrival_s for r in m), min(r.id for r in m), m)
                        for m in sched.groups(list(sched.waiting)).values())
        rank = {r.id: g for g, (*_, m) in enumerate(ranked) for r in m}
        return sorted(sched.waiting, key=lambda r: (rank[r.id], r.arrival_s, r.id))

    for i, r in enumerate(reqs):
        sched.add_request(r, float(i))
        if i % 7 == 6:  # some leave the queue (as admitted or aborted ones do)
            sched.remove(sched.waiting.peek(), float(i))
        sched.begin_step(float(i))
        sched.waiting.sort(key=sched._plan.__getitem__)
        assert [r.id for r in sched.waiting] == [r.id for r in from_scratch()]
    assert len(sched._plan) == len(sched.waiting)


def test_waiting_queue_kept_in_plan_order_between_steps():
    """The queue left sorted between steps (requests without prefix keys placed by their key
    as they arrive or are preempted) is in plan order at every decision it is not sorted
    again, keyed requests and their replans included; and such decisions happen."""
    from tests.factories import serve

    engine, sched, kv, loop, done = make_engine(num_blocks=30, scheduler="batchllm", max_num_seqs=6,
                                                fast_forward=False, params={"output_len_estimate": "max_tokens"})
    reqs = []
    for i in range(80):
        r = make_request(i, 8 + 9 * (i % 5), 4 + 40 * (i % 6), arrival=0.003 * i, max_tokens=2 + 10 * (i % 4))
        if i % 3 == 0:  # some share a prefix: the keyed part is regrouped when it changes
            r.kv_block_keys = (("p", i % 2), ("q", i))
        reqs.append(r)
    begin, seen = sched.begin_step, {"clean": 0, "inserted": 0}

    def checking(now_s):
        begin(now_s)
        held = list(sched.waiting)
        if sched.waiting.clean:
            assert held == sorted(held, key=sched._plan.__getitem__)
            seen["clean"] += 1
            seen["inserted"] += sum(1 for a, b in zip(held, held[1:]) if a.arrival_s > b.arrival_s)

    sched.begin_step = checking
    serve(engine, loop, reqs)
    assert len(done) == 80 and sum(r.num_preemptions for r in reqs) > 0
    assert seen["clean"] > 20 and seen["inserted"] > 0


def test_num_blocks_list_is_num_blocks_of_each():
    from servesim.replica.kv_cache import KVCacheManager

    kv = KVCacheManager(50, block_size=4)
    reqs = [make_request(i, 3 + 5 * i, 4) for i in range(6)]
    for r in reqs[:4]:  # the last two hold nothing
        assert kv.allocate_slots(r, r.prompt_len)
    assert kv.num_blocks_list(reqs) == [kv.num_blocks_of(r.id) for r in reqs] == [1, 2, 4, 5, 0, 0]


def test_a_lone_keyed_request_is_planned_without_building_its_run_keys():
    """With one request with prefix keys waiting, it is its own group (as `groups` would say):
    its plan key is that group's, and its run keys are not built for the plan (its lookup at
    admission builds them from its previous turn's kept keys)."""
    from servesim.replica.block_keys import BlockKeys

    engine, sched, *_ = make_engine(scheduler="batchllm")
    lone = _req(0, 64, 8, (1, 2, 3, 4))
    lone.kv_block_keys = BlockKeys(lone.hash_ids, 16, 16)
    sched.add_request(make_request(1, 30, 60, 0.5), 0.5)  # (no prefix keys: a group of its own)
    sched.add_request(lone, 1.0)
    sched.begin_step(1.0)
    assert lone.kv_block_keys.run_keys._list is None
    assert sched._plan[lone] == (-8 / 64, 0.0, 0, 0.0, 0)
    assert list(sched.groups([lone]).values()) == [[lone]]
    other = _req(2, 64, 8, (1, 2, 9))  # a second keyed request: the keyed part is grouped by keys
    other.kv_block_keys = BlockKeys(other.hash_ids, 16, 16)
    sched.add_request(other, 2.0)
    sched.begin_step(2.0)
    assert lone.kv_block_keys.run_keys._list is not None
    assert sched._plan[lone][:3] == sched._plan[other][:3] == (-16 / 128, 0.0, 0)


def test_projected_use_is_the_per_request_sum_of_clipped_growths():
    """With the oracle estimate the projection is read as final blocks less blocks held; at
    every step (tight KV, prompts with prefix keys and hits, chunked prompts)
    it equals the per-request sum of max(final - held, 0), and the kept final blocks went.
    (The oracle's projection admits nothing that could run out: no preemption here.)"""
    from servesim.replica.kv_cache import cdiv
    from tests.factories import serve

    engine, sched, kv, loop, done = make_engine(num_blocks=40, scheduler="batchllm", max_num_seqs=8,
                                                max_num_batched_tokens=48, fast_forward=True)
    reqs = []
    for i in range(90):
        r = make_request(i, 8 + 13 * (i % 7), 3 + 29 * (i % 5), arrival=0.004 * i)
        if i % 4 == 0:  # a shared prefix: later readers hit it
            r.kv_block_keys = (("p", i % 3), ("q", i % 2), ("r", i))
        reqs.append(r)
    checked = []

    def reference():
        growth = sum(max(cdiv(r.prompt_len + max(r.output_len, r.num_output_tokens + 1), kv.block_size)
                         - kv.num_blocks_of(r.id), 0) for r in sched.running)
        return kv.num_gpu_blocks - kv.num_free_blocks + growth

    projected = sched._projected_use

    def checking():
        value = projected()
        assert value == reference()
        checked.append(len(sched.running))
        return value

    sched._projected_use = checking
    serve(engine, loop, reqs)
    engine.drain(loop.now_s)
    assert len(done) == 90 and sum(r.num_cached_tokens for r in reqs) > 0
    assert len(checked) > 100 and max(checked) >= 4
    assert not sched._final_blocks  # (dropped as requests leave)
