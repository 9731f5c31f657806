"""Fast-forwarding decode-only stretches gives exactly the results of stepping one by one."""

from __future__ import annotations

import numpy as np
import pytest

from tests.factories import (REQUEST_OUTCOME, ToyPerf, VectorOnlyToyPerf, assert_same_run, make_engine, make_request,
                             run_engine, serve)


def random_requests(seed: int, n: int = 300):
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(0.05, n))
    reqs = []
    for i in range(n):
        kw = {}
        if rng.random() < 0.4:  # shared prefixes from a small pool, some covering outputs too
            kw = dict(hash_ids=tuple(int(x) for x in range(int(rng.integers(0, 3)) * 10,
                                                           int(rng.integers(0, 3)) * 10 + int(rng.integers(1, 8)))),
                      hash_block_tokens=32)
        reqs.append(make_request(i, int(rng.integers(1, 400)), int(rng.integers(1, 300)), float(t[i]), **kw))
    return reqs


def run(reqs, fast_forward: bool, num_blocks: int, perf=None, defer_finishes=False):
    engine, sched, kv, loop, done = make_engine(num_blocks=num_blocks, max_num_batched_tokens=256, max_num_seqs=16,
                                                fast_forward=fast_forward, perf=perf, defer_finishes=defer_finishes)
    serve(engine, loop, reqs)
    kv.check_all_free()
    return engine


@pytest.mark.parametrize("perf,defer", [(ToyPerf, False), (VectorOnlyToyPerf, False),  # scalar / vectorised times
                                        (ToyPerf, True)])  # stretches that run past finishes
@pytest.mark.parametrize("seed,num_blocks", [(1, 400), (2, 120), (3, 60), (4, 2000)])
def test_fast_forward_matches_step_by_step(seed, num_blocks, perf, defer):
    a_reqs, b_reqs = random_requests(seed), random_requests(seed)
    a = run(a_reqs, True, num_blocks, perf(), defer)
    b = run(b_reqs, False, num_blocks)
    assert a.num_fast_forwarded_steps > 0.5 * a.num_steps  # the fast path really was used
    assert_same_run(a, b, a_reqs, b_reqs, num_blocks, REQUEST_OUTCOME + ("num_cached_tokens",))
    assert sum(r.num_preemptions for r in b_reqs) > 0 or num_blocks >= 400


@pytest.mark.parametrize("scheduler,params", [
    ("vllm-v0", {}), ("vllm-v0", {"preemption_mode": "swap"}), ("fastswitch", {}),
    ("fastswitch", {"priority_update_interval": 7, "overlap_swap": False}), ("andes", {}),
    ("andes", {"solver_interval": 5}), ("continuum", {}),
])
@pytest.mark.parametrize("seed,num_blocks", [(2, 120), (3, 60)])
def test_fast_forward_is_exact_for_every_policy(scheduler, params, seed, num_blocks):
    a_reqs, b_reqs = random_requests(seed), random_requests(seed)
    for reqs in (a_reqs, b_reqs):
        for r in reqs:  # two tenants (fairness) in three programs (continuum pins)
            r.tenant = "heavy" if r.id % 3 else "light"
            r.program_id = r.id % 3
    a = run_engine(a_reqs, True, num_blocks, scheduler, params)
    b = run_engine(b_reqs, False, num_blocks, scheduler, params)
    assert a.num_fast_forwarded_steps > 0
    assert_same_run(a, b, a_reqs, b_reqs)


@pytest.mark.parametrize("seed,num_blocks", [(5, 2000), (6, 150)])
def test_stretches_through_finishes_match_step_by_step(seed, num_blocks):
    """Open-loop, no prefix keys: finishes are processed late inside stretches, same results."""
    def reqs():
        return [make_request(r.id, r.prompt_len, r.output_len, r.arrival_s) for r in random_requests(seed)]

    a_reqs, b_reqs, c_reqs = reqs(), reqs(), reqs()
    a = run(a_reqs, True, num_blocks, ToyPerf(), defer_finishes=True)
    b = run(b_reqs, False, num_blocks)
    c = run(c_reqs, True, num_blocks, ToyPerf(), defer_finishes=False)
    assert a.loop.num_events < c.loop.num_events  # fewer events: stretches ran past finishes
    assert_same_run(a, b, a_reqs, b_reqs, num_blocks)


@pytest.mark.parametrize("defer", [False, True])
@pytest.mark.parametrize("seed,num_blocks", [(8, 60), (9, 90)])
def test_recompute_hits_on_own_blocks_match_step_by_step(seed, num_blocks, defer):
    """Preempted requests without hash ids re-admitted with hits on their surviving blocks:
    stretches evict from those runs exactly as steps do."""
    def reqs():
        return [make_request(r.id, r.prompt_len, r.output_len, r.arrival_s) for r in random_requests(seed, 200)]

    a_reqs, b_reqs = reqs(), reqs()
    a = run(a_reqs, True, num_blocks, ToyPerf(), defer)
    b = run(b_reqs, False, num_blocks)
    assert a.num_fast_forwarded_steps > 0.3 * a.num_steps and a.num_steps == b.num_steps
    assert [(r.finish_s, r.token_steps, r.num_preemptions, r.num_cached_tokens_total) for r in a_reqs] == \
           [(r.finish_s, r.token_steps, r.num_preemptions, r.num_cached_tokens_total) for r in b_reqs]
    assert np.array_equal(a.recorder.step_log(num_blocks).kv_used_blocks, b.recorder.step_log(num_blocks).kv_used_blocks)
    assert sum(r.num_cached_tokens_total for r in b_reqs) > 0  # re-admissions did hit
    assert a.scheduler.kv.num_hit_tokens == b.scheduler.kv.num_hit_tokens
