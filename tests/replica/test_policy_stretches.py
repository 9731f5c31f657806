"""Every policy's fast-forward answer: stretches that start with the step finishing prompts
(`after_prefill`) and run through finishes (`through_finishes`) give exactly the results of
stepping one by one, and they are really taken."""

from __future__ import annotations

import pytest

from tests.factories import assert_same_run, make_engine, make_request, serve
from tests.replica.test_fast_forward import random_requests


POLICIES = [
    ("priority", {}), ("priority", {"preemption": False}), ("edf", {"default_ttft_s": 1.0, "default_tpot_s": 0.05}), ("edf", {}),
    ("autellix", {}), ("autellix", {"mode": "atlas", "preemption_mode": "recompute"}), ("batchllm", {}),
    ("orca", {"reservation": "oracle"}), ("vllm-v0", {}), ("vllm-v0", {"preemption_mode": "swap"}),
    ("continuum", {}), ("hygen", {}), ("sarathi", {"chunk_size": 128}), ("andes", {}), ("sglang", {}),
    ("sglang", {"enable_mixed_chunk": True}), ("vtc", {}), ("fastswitch", {}),
    ("fastswitch", {"priority_update_interval": 7}),
]


def engine_run(reqs, fast_forward: bool, num_blocks: int, scheduler: str, params: dict, defer: bool):
    engine, _, kv, loop, _ = make_engine(num_blocks=num_blocks, scheduler=scheduler, params=params,
                                         max_num_batched_tokens=256, max_num_seqs=16, fast_forward=fast_forward,
                                         defer_finishes=defer)
    serve(engine, loop, reqs)
    engine.drain(loop.now_s)
    kv.check_all_free()
    return engine


def mixed_requests(seed: int, keys: bool, n: int = 150):
    reqs = random_requests(seed, n)
    if not keys:  # (prefix keys stop stretches at finishes: none here)
        reqs = [make_request(r.id, r.prompt_len, r.output_len, r.arrival_s) for r in reqs]
    for r in reqs:  # two tenants, three programs, priorities; no offline work (hygen's is never steady)
        r.tenant = "heavy" if r.id % 3 else "light"
        r.program_id = r.id % 3
        r.priority = r.id % 2
    return reqs


@pytest.mark.parametrize("scheduler,params", POLICIES)
@pytest.mark.parametrize("seed,num_blocks,keys", [(2, 120, True), (3, 60, False), (4, 2000, False)])
def test_stretches_match_step_by_step(scheduler, params, seed, num_blocks, keys):
    a_reqs, b_reqs = mixed_requests(seed, keys), mixed_requests(seed, keys)
    a = engine_run(a_reqs, True, num_blocks, scheduler, params, defer=True)
    b = engine_run(b_reqs, False, num_blocks, scheduler, params, defer=False)
    assert a.num_fast_forwarded_steps > 0
    assert_same_run(a, b, a_reqs, b_reqs, num_blocks)


# Requests that each run alone (no overlap): with `after_prefill` the prompt's step starts the
# stretch, so every step is fast-forwarded; without it one step per request is not.
@pytest.mark.parametrize("scheduler,params", POLICIES)
def test_a_lone_request_is_one_stretch_from_its_prompt_on(scheduler, params):
    reqs = [make_request(i, 100, 30, 2.0 * i) for i in range(10)]
    engine = engine_run(reqs, True, 400, scheduler, params, defer=True)
    assert engine.num_steps == 10 * 30
    assert engine.num_fast_forwarded_steps == engine.num_steps
    assert engine.loop.num_events == 10 * 3  # arrival, step start, stretch end


THROUGH = POLICIES


# Overlapping requests with nobody waiting: a stretch runs past the finishes of its shorter
# requests instead of stopping at each. (Each states its `max_tokens`: sglang reserves a
# request's `max_new` tokens at admission, `max_model_len` without it, and would admit one
# request at a time here.)
@pytest.mark.parametrize("scheduler,params", THROUGH)
def test_stretches_run_through_finishes_when_nothing_waits(scheduler, params):
    def reqs():
        return [make_request(i, 50, 10 + 7 * i, 0.0, max_tokens=10 + 7 * i) for i in range(8)]

    a_reqs, b_reqs, c_reqs = reqs(), reqs(), reqs()
    a = engine_run(a_reqs, True, 400, scheduler, params, defer=True)
    b = engine_run(b_reqs, False, 400, scheduler, params, defer=False)
    c = engine_run(c_reqs, True, 400, scheduler, params, defer=False)
    assert_same_run(a, b, a_reqs, b_reqs, 400)
    assert a.loop.num_events < c.loop.num_events - 5  # eight finishes, about one stretch


def test_sglang_runs_through_a_finish_in_step_order_while_tree_blocks_are_evictable(monkeypatch):
    # A's 20 prompt blocks stay in the radix tree, evictable, after it finishes. B and C then
    # decode with 6 truly free blocks and need 14 more: stepping takes B's blocks when it
    # finishes and never evicts; a stretch through B's finish that took all its growth first
    # would evict 8 of A's blocks, and D, which shares A's prompt, would hit fewer. The stretch
    # applies its growth and B's release in step order (`replica/ordered_frees.py`).
    from servesim.replica import ordered_frees, stretch_apply
    released = []
    allocate = ordered_frees.allocate_in_order
    monkeypatch.setattr(stretch_apply, "allocate_in_order",
                        lambda kv, st, *a: (released.append(len(a[1])), allocate(kv, st, *a))[1])

    def reqs():
        a_keys = dict(hash_ids=tuple(range(20)), hash_block_tokens=16)
        return [make_request(0, 320, 2, 0.0, max_tokens=2, **a_keys),
                make_request(1, 100, 40, 1.0, max_tokens=40), make_request(2, 100, 200, 1.0, max_tokens=200),
                make_request(3, 320, 5, 10.0, max_tokens=5, **a_keys)]

    a_reqs, b_reqs = reqs(), reqs()
    a = engine_run(a_reqs, True, 40, "sglang", {}, defer=True)
    assert released and max(released) >= 1, released
    b = engine_run(b_reqs, False, 40, "sglang", {}, defer=False)
    assert a.num_fast_forwarded_steps > 0
    assert_same_run(a, b, a_reqs, b_reqs, 40)
    assert a_reqs[3].num_cached_tokens == b_reqs[3].num_cached_tokens == 319 // 16 * 16
