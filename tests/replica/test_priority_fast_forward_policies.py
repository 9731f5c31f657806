"""Fast-forwarding gives exactly the step-by-step results for the policies of this library
(orca, sarathi, sglang, priority, edf, vtc, autellix, batchllm, hygen)."""

from __future__ import annotations

import pytest

from servesim.replica.schedulers import get_scheduler
from tests.factories import assert_same_run, make_engine, serve
from tests.replica.test_fast_forward import random_requests


def run(reqs, fast_forward: bool, num_blocks: int, scheduler: str, params: dict):
    engine, sched, kv, loop, done = make_engine(num_blocks=num_blocks, max_num_batched_tokens=256, max_num_seqs=16,
                                                fast_forward=fast_forward, scheduler=scheduler, params=params)
    kv = get_scheduler(scheduler).make_kv_cache(num_blocks, 16, True, num_blocks)
    sched.kv = engine.kv = kv
    serve(engine, loop, reqs)
    engine.drain(loop.now_s)
    kv.check_all_free()
    return engine


@pytest.mark.parametrize("scheduler,params", [
    ("orca", {"reservation": "oracle"}), ("sarathi", {"chunk_size": 128}), ("sglang", {}),
    ("sglang", {"schedule_policy": "lpm"}), ("sglang", {"schedule_policy": "dfs-weight"}), ("priority", {}),
    ("edf", {"default_ttft_s": 1.0, "default_tpot_s": 0.05}), ("vtc", {}), ("autellix", {}),
    ("autellix", {"mode": "atlas", "preemption_mode": "recompute"}), ("batchllm", {}), ("hygen", {}),
])
@pytest.mark.parametrize("seed,num_blocks", [(2, 120), (3, 60)])
def test_fast_forward_is_exact(scheduler, params, seed, num_blocks):
    a_reqs, b_reqs = random_requests(seed, 150), random_requests(seed, 150)
    for reqs in (a_reqs, b_reqs):
        for r in reqs:  # two tenants, three programs, priorities, a third offline
            r.tenant = "heavy" if r.id % 3 else "light"
            r.program_id = r.id % 3
            r.priority = r.id % 2
            r.is_offline = r.id % 3 == 0
    a = run(a_reqs, True, num_blocks, scheduler, params)
    b = run(b_reqs, False, num_blocks, scheduler, params)
    assert_same_run(a, b, a_reqs, b_reqs)
