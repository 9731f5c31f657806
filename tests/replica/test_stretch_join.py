"""Arrivals joining a stretch in flight (`replica/stretch_join.py`) give exactly the run that
stepping one by one gives: the same requests' tokens and times and the same step log, and
the joins really happen."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.perf.build import build_perf_model
from tests.factories import REQUEST_OUTCOME, ToyPerf, assert_same_run, make_engine, make_request, serve


def light_load(seed: int, n: int = 250, gap_s: float = 0.25, max_prompt: int = 200):
    """Open-loop requests without prefix keys, arriving while others decode."""
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(gap_s, n))
    return [make_request(i, int(rng.integers(1, max_prompt)), int(rng.integers(1, 300)), float(t[i]),
                         priority=int(rng.integers(0, 3))) for i in range(n)]


def run(reqs, fast_forward: bool, num_blocks: int, perf, policy: str = "fcfs", **kw):
    cfg = dict(max_num_batched_tokens=256, max_num_seqs=16)
    cfg.update(kw)
    engine, _, kv, loop, _ = make_engine(num_blocks=num_blocks, fast_forward=fast_forward, perf=perf,
                                         defer_finishes=True, params={"policy": policy}, **cfg)
    serve(engine, loop, reqs)
    kv.check_all_free()
    return engine


@pytest.fixture(scope="module")
def llama():
    return build_perf_model("llama-3.1-8b", "h100-sxm")


@pytest.mark.parametrize("policy", ["fcfs", "priority"])
@pytest.mark.parametrize("seed,num_blocks", [(1, 2000), (2, 300), (3, 120)])
@pytest.mark.parametrize("perf_name", ["toy", "llama"])
def test_joined_stretches_match_stepping(seed, num_blocks, perf_name, policy, llama):
    perf = ToyPerf() if perf_name == "toy" else llama  # scalar decode form / affine forms (numpy chunks)
    a_reqs, b_reqs = light_load(seed), light_load(seed)
    a = run(a_reqs, True, num_blocks, perf, policy)
    b = run(b_reqs, False, num_blocks, perf, policy)
    assert_same_run(a, b, a_reqs, b_reqs, num_blocks,
                    REQUEST_OUTCOME + ("num_cached_tokens", "first_scheduled_s", "num_computed_tokens"))
    assert a.num_joined_arrivals > 0.3 * len(a_reqs)  # most arrivals joined a stretch in flight
    assert b.num_joined_arrivals == 0


def test_several_arrivals_in_one_step_join_together(llama):
    # bursts of four requests within a step: all admitted at the same boundary
    reqs_a, reqs_b = ([make_request(4 * i + j, 30 + 7 * j, 40 + 13 * i % 50, 0.3 * i + 1e-4 * j) for i in range(40)
                       for j in range(4)] for _ in range(2))
    a = run(reqs_a, True, 2000, llama)
    b = run(reqs_b, False, 2000, llama)
    assert_same_run(a, b, reqs_a, reqs_b, 2000, REQUEST_OUTCOME + ("first_scheduled_s",))
    assert a.num_joined_arrivals >= 100


def test_a_prompt_the_budget_would_chunk_does_not_join(llama):
    # prompts longer than the budget left by the decodes are chunked by `schedule`: no join,
    # the stretch ends as before (and the run is still exact)
    reqs_a, reqs_b = light_load(5, max_prompt=600), light_load(5, max_prompt=600)
    a = run(reqs_a, True, 2000, llama, max_num_batched_tokens=300)
    b = run(reqs_b, False, 2000, llama, max_num_batched_tokens=300)
    assert_same_run(a, b, reqs_a, reqs_b, 2000, REQUEST_OUTCOME)
    long_prompts = [r for r in reqs_a if r.prompt_len > 300]
    assert long_prompts and a.num_joined_arrivals < len(reqs_a) - len(long_prompts)


def test_max_num_seqs_stops_joins(llama):
    reqs_a, reqs_b = light_load(6, gap_s=0.01), light_load(6, gap_s=0.01)
    a = run(reqs_a, True, 2000, llama, max_num_seqs=4)
    b = run(reqs_b, False, 2000, llama, max_num_seqs=4)
    assert_same_run(a, b, reqs_a, reqs_b, 2000, REQUEST_OUTCOME)
    assert b.recorder.step_log(2000).num_running.max() == 4


def test_vllm_answers_which_arrivals_join():
    _, sched, _, _, _ = make_engine(num_blocks=100, max_num_batched_tokens=64, max_num_seqs=3)
    fresh, second = make_request(0, 40, 5), make_request(1, 20, 5)
    sched.add_request(fresh, 0.0)
    assert sched.arrivals_join(2) == [(fresh, 40)]
    assert sched.arrivals_join(30) is None  # 34 tokens left by 30 decodes: its prompt would be chunked
    sched.add_request(second, 0.0)
    assert sched.arrivals_join(4) == [(fresh, 40), (second, 20)]  # in queue order, from the budget left
    assert sched.arrivals_join(5) is None  # 59 tokens left: the second prompt would be chunked
    sched.running.extend([make_request(9, 1, 1), make_request(8, 1, 1)])
    assert sched.arrivals_join(2) is None  # max_num_seqs 3: the second is not admitted
    sched.running.clear()
    second.num_output_tokens = 2  # emitted on a replica that crashed: its recompute is not a fresh prompt
    assert sched.arrivals_join(0) is None
