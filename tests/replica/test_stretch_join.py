"""Arrivals joining a stretch in flight (`replica/stretch_join.py`) give exactly the run that
stepping one by one gives: the same requests' tokens and times and the same step log, and
the joins really happen."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.perf.build import build_perf_model
from servesim.replica import stretch_join
from tests.factories import REQUEST_OUTCOME, ToyPerf, assert_same_run, make_engine, make_request, serve


def light_load(seed: int, n: int = 250, gap_s: float = 0.25, max_prompt: int = 200):
    """Open-loop requests without prefix keys, arriving while others decode."""
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(gap_s, n))
    return [make_request(i, int(rng.integers(1, max_prompt)), int(rng.integers(1, 300)), float(t[i]),
                         priority=int(rng.integers(0, 3))) for i in range(n)]


def run(reqs, fast_forward: bool, num_blocks: int, perf, policy: str = "fcfs", scheduler: str = "vllm",
        params: dict | None = None, **kw):
    cfg = dict(max_num_batched_tokens=256, max_num_seqs=16)
    cfg.update(kw)
    params = {"policy": policy} if params is None else params
    engine, _, kv, loop, _ = make_engine(num_blocks=num_blocks, fast_forward=fast_forward, perf=perf,
                                         scheduler=scheduler, defer_finishes=True, params=params, **cfg)
    serve(engine, loop, reqs)
    kv.check_all_free()
    return engine


@pytest.fixture
def lone_joins(monkeypatch):
    """Counts the joins of one arrival into a stretch in sync (`stretch_join._join_one`, the
    path of nearly every arrival at a busy replica)."""
    calls = []
    lone = stretch_join._join_one
    monkeypatch.setattr(stretch_join, "_join_one", lambda *args: calls.append(1) or lone(*args))
    return calls


@pytest.fixture(scope="module")
def llama():
    return build_perf_model("llama-3.1-8b", "h100-sxm")


@pytest.mark.parametrize("policy", ["fcfs", "priority"])
@pytest.mark.parametrize("seed,num_blocks", [(1, 2000), (2, 300), (3, 120)])
@pytest.mark.parametrize("perf_name", ["toy", "llama"])
def test_joined_stretches_match_stepping(seed, num_blocks, perf_name, policy, llama, lone_joins):
    perf = ToyPerf() if perf_name == "toy" else llama  # scalar decode form / affine forms (numpy chunks)
    a_reqs, b_reqs = light_load(seed), light_load(seed)
    a = run(a_reqs, True, num_blocks, perf, policy)
    b = run(b_reqs, False, num_blocks, perf, policy)
    assert_same_run(a, b, a_reqs, b_reqs, num_blocks,
                    REQUEST_OUTCOME + ("num_cached_tokens", "first_scheduled_s", "num_computed_tokens"))
    assert a.num_joined_arrivals > 0.3 * len(a_reqs)  # most arrivals joined a stretch in flight
    assert b.num_joined_arrivals == 0
    # most of them alone, into a stretch whose scalar pricing was at the join step
    assert 0.5 * a.num_joined_arrivals < len(lone_joins) <= a.num_joined_arrivals


# The other policies whose next `schedule` admits fresh prompts whole as vLLM does (with the
# parameters under which they join): the same runs, bit for bit, and joins that happened.
JOINING = [("priority", {}), ("priority", {"preemption": False}), ("edf", {}), ("edf", {"default_ttft_s": 0.5}),
           ("edf", {"default_ttft_s": 0.5, "default_tpot_s": 0.05}), ("andes", {}), ("andes", {"util_threshold": 0.5}),
           ("hygen", {}), ("sarathi", {"chunk_size": 256}), ("sarathi", {"chunk_size": 256, "watermark": 0.2}),
           ("orca", {"reservation": "oracle"}), ("orca", {"reservation": "pow2"}),
           ("trtllm", {}), ("trtllm", {"capacity_scheduler_policy": "MAX_UTILIZATION"}),
           ("trtllm", {"enable_chunked_context": True}), ("batchllm", {}), ("batchllm", {"mem_threshold": 0.5}),
           ("batchllm", {"max_num_batched_tokens": 256})]


def light_load_with_slo(seed: int, **kw):
    """`light_load` with a TTFT target on every other request (edf's keys then vary)."""
    reqs = light_load(seed, **kw)
    for r in reqs[::2]:
        r.ttft_slo_s = 0.3 + 0.1 * (r.id % 3)
    return reqs


@pytest.mark.parametrize("scheduler,params", JOINING)
@pytest.mark.parametrize("seed,num_blocks", [(1, 2000), (2, 300), (3, 120)])
@pytest.mark.parametrize("perf_name", ["toy", "llama"])
def test_other_policies_join_exactly(scheduler, params, seed, num_blocks, perf_name, llama, lone_joins):
    perf = ToyPerf() if perf_name == "toy" else llama
    a_reqs, b_reqs = light_load_with_slo(seed), light_load_with_slo(seed)
    a = run(a_reqs, True, num_blocks, perf, scheduler=scheduler, params=params)
    b = run(b_reqs, False, num_blocks, perf, scheduler=scheduler, params=params)
    assert_same_run(a, b, a_reqs, b_reqs, num_blocks,
                    REQUEST_OUTCOME + ("num_cached_tokens", "first_scheduled_s", "num_computed_tokens"))
    # most arrivals joined a stretch in flight; with 120 blocks fewer (a newcomer that waits
    # for blocks cannot join), and where admission counts whole outputs' blocks (orca's
    # reservations, batchllm's projection) or per-token deadlines preempt, the tight caches
    # leave room for only a few
    if num_blocks <= 300 and (scheduler in ("orca", "batchllm") or "default_tpot_s" in params):
        share = 0.0
    else:
        share = 0.3 if num_blocks > 120 else 0.1
    assert a.num_joined_arrivals > share * len(a_reqs)
    assert b.num_joined_arrivals == 0
    assert len(lone_joins) <= a.num_joined_arrivals and (len(lone_joins) > 0 or a.num_joined_arrivals < 10)


@pytest.mark.parametrize("scheduler,exact", [("batchllm", "_projected_use"), ("trtllm", "_reserved")])
def test_joins_read_the_blocks_held_only_where_a_bound_leaves_too_little_room(scheduler, exact, llama, monkeypatch):
    """BatchLLM's projection and TensorRT-LLM's no-evict reservations at a join pass over the
    blocks the running requests hold; a bound without them (their final or total blocks, at
    least the projection's growth and the reservations) answers first. With room to spare the
    arrivals join without the pass; with little, the pass decides; both as stepping."""
    from servesim.replica.schedulers import get_scheduler

    cls = get_scheduler(scheduler)
    depth, read = [0], []  # (inside an `arrivals_join`; the reads made there)
    join, full = cls.arrivals_join, getattr(cls, exact)

    def arrivals_join(self, n):
        depth[0] += 1
        try:
            return join(self, n)
        finally:
            depth[0] -= 1

    monkeypatch.setattr(cls, "arrivals_join", arrivals_join)
    monkeypatch.setattr(cls, exact, lambda self, *a: read.append(depth[0]) or full(self, *a))
    for num_blocks in (2000, 120):
        read.clear()
        a_reqs, b_reqs = light_load(1), light_load(1)
        a = run(a_reqs, True, num_blocks, llama, scheduler=scheduler, params={})
        b = run(b_reqs, False, num_blocks, llama, scheduler=scheduler, params={})
        assert_same_run(a, b, a_reqs, b_reqs, num_blocks, REQUEST_OUTCOME + ("first_scheduled_s",))
        in_joins = len(read) - read.count(0)
        if num_blocks == 2000:
            assert a.num_joined_arrivals > 100 and in_joins == 0
        else:
            assert in_joins > 0


@pytest.mark.parametrize("scheduler,params", JOINING)
def test_other_policies_bursts_and_chunked_prompts(scheduler, params, llama):
    # bursts of four within a step join together; prompts longer than the budget the decodes
    # leave do not join (chunked, or a whole step for hygen's online queue) and stay exact
    bursts = [[make_request(4 * i + j, 30 + 7 * j, 40 + 13 * i % 50, 0.3 * i + 1e-4 * j, priority=j % 2)
               for i in range(40) for j in range(4)] for _ in range(2)]
    a = run(bursts[0], True, 2000, llama, scheduler=scheduler, params=params)
    b = run(bursts[1], False, 2000, llama, scheduler=scheduler, params=params)
    assert_same_run(a, b, bursts[0], bursts[1], 2000, REQUEST_OUTCOME + ("first_scheduled_s",))
    assert a.num_joined_arrivals >= 100 if scheduler != "andes" else a.num_joined_arrivals < 10  # (a lone newcomer only)
    if scheduler == "orca" or (scheduler == "batchllm" and "max_num_batched_tokens" not in params):
        return  # (no token budget: every prompt runs whole)
    long_a, long_b = light_load(5, max_prompt=600), light_load(5, max_prompt=600)
    a = run(long_a, True, 2000, llama, scheduler=scheduler, params=params, max_num_batched_tokens=300)
    b = run(long_b, False, 2000, llama, scheduler=scheduler, params=params, max_num_batched_tokens=300)
    assert_same_run(a, b, long_a, long_b, 2000, REQUEST_OUTCOME)
    long_prompts = [r for r in long_a if r.prompt_len > 300]
    if scheduler == "sarathi":  # (long prompts join with their chunks: `replica/chunk_join.py`)
        assert long_prompts and a.num_joined_arrivals > len(long_a) - len(long_prompts)
    else:
        assert long_prompts and 0 < a.num_joined_arrivals < len(long_a) - len(long_prompts)


@pytest.mark.parametrize("scheduler,params,why", [
    ("batchllm", {"output_len_estimate": "max_tokens"}, "admission reads a projection that decodes may change"),
])
def test_policies_that_do_not_join_stay_exact(scheduler, params, why, llama):
    a_reqs, b_reqs = light_load(4), light_load(4)
    a = run(a_reqs, True, 300, llama, scheduler=scheduler, params=params)
    b = run(b_reqs, False, 300, llama, scheduler=scheduler, params=params)
    assert_same_run(a, b, a_reqs, b_reqs, 300, REQUEST_OUTCOME)
    assert a.num_joined_arrivals == 0, why


def test_hygen_offline_work_stops_joins(llama):
    # an offline request held: the offline fill decides by predicted step time, no join
    reqs = [light_load(7) for _ in range(2)]
    for rs in reqs:
        for r in rs[100:110]:
            r.is_offline = True
    a = run(reqs[0], True, 2000, llama, scheduler="hygen", params={})
    b = run(reqs[1], False, 2000, llama, scheduler="hygen", params={})
    assert_same_run(a, b, reqs[0], reqs[1], 2000, REQUEST_OUTCOME)
    assert 0 < a.num_joined_arrivals  # before and after the offline ones


def test_several_arrivals_in_one_step_join_together(llama, lone_joins):
    # bursts of four requests within a step: all admitted at the same boundary
    reqs_a, reqs_b = ([make_request(4 * i + j, 30 + 7 * j, 40 + 13 * i % 50, 0.3 * i + 1e-4 * j) for i in range(40)
                       for j in range(4)] for _ in range(2))
    a = run(reqs_a, True, 2000, llama)
    b = run(reqs_b, False, 2000, llama)
    assert_same_run(a, b, reqs_a, reqs_b, 2000, REQUEST_OUTCOME + ("first_scheduled_s",))
    assert a.num_joined_arrivals >= 100
    assert len(lone_joins) < a.num_joined_arrivals  # (bursts join together: the general path)


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


@pytest.mark.parametrize("policy", ["fcfs", "priority"])
def test_joins_admit_without_the_general_admission(policy, llama, monkeypatch):
    # a fresh arrival that joins is admitted by `admit_whole`'s own lines (vLLM's admission
    # with no hit written out), not through `VLLMSteps.admit`: every other admission still is
    # (the run is exact against stepping, which admits each request through `admit`)
    from servesim.replica.schedulers.vllm_steps import VLLMSteps
    calls = []
    admit = VLLMSteps.admit
    monkeypatch.setattr(VLLMSteps, "admit", lambda self, req, *args: calls.append(req.id) or admit(self, req, *args))
    a_reqs, b_reqs = light_load(8), light_load(8)
    a = run(a_reqs, True, 2000, llama, policy)
    stepped = len(calls)
    b = run(b_reqs, False, 2000, llama, policy)
    assert_same_run(a, b, a_reqs, b_reqs, 2000, REQUEST_OUTCOME + ("first_scheduled_s", "num_computed_tokens"))
    assert a.num_joined_arrivals > 0.3 * len(a_reqs)
    assert stepped <= len(a_reqs) - a.num_joined_arrivals  # (no admission went through `admit` twice)
    assert len(calls) - stepped >= len(b_reqs)  # stepping admitted every request through it
