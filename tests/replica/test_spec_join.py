"""Arrivals joining a speculative stretch in flight (`stretch_join.spec_join_arrivals`) give
exactly the run that stepping one by one gives: every request's tokens, times and computed
tokens, the step log and the acceptance rows left over; and the joins really happen."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.perf.build import build_perf_model
from servesim.replica import stretch_join
from tests.cluster.helpers import assert_same_steps, outcome, reads_everything  # noqa: F401
from tests.cluster.helpers import run as cluster_run
from tests.factories import (
    REQUEST_OUTCOME, STEP_LOG_COLUMNS, ToyPerf, assert_same_run, make_engine, make_request, serve, serve_until_crash,
)
from tests.replica.test_stretch_join import JOINING, light_load, light_load_with_slo

FIELDS = REQUEST_OUTCOME + ("num_computed_tokens", "first_scheduled_s")


@pytest.fixture(scope="module")
def llama():
    return build_perf_model("llama-3.1-8b", "h100-sxm")


def spec_run(reqs, fast_forward: bool, num_blocks: int, perf, scheduler: str = "vllm", params: dict | None = None,
             k: int = 3, rate: float = 0.7, **kw):
    cfg = dict(max_num_batched_tokens=256, max_num_seqs=16)
    cfg.update(kw)
    engine, _, kv, loop, _ = make_engine(num_blocks=num_blocks, fast_forward=fast_forward, perf=perf,
                                         scheduler=scheduler, defer_finishes=True, params=params or {},
                                         num_speculative_tokens=k, spec_acceptance_rate=rate,
                                         rng=np.random.default_rng(7), **cfg)
    serve(engine, loop, reqs)
    engine.drain(loop.now_s)
    kv.check_all_free()
    return engine


def assert_same_spec_run(a, b, a_reqs, b_reqs, num_blocks: int, fields=FIELDS) -> None:
    assert_same_run(a, b, a_reqs, b_reqs, num_blocks, fields)
    assert a.spec_draws.take(50) == b.spec_draws.take(50)  # the stretches took exactly their steps' rows
    assert b.num_joined_arrivals == 0


@pytest.mark.parametrize("seed,num_blocks", [(1, 2000), (2, 300), (3, 120)])
@pytest.mark.parametrize("perf_name", ["toy", "llama"])
@pytest.mark.parametrize("k,rate", [(3, 0.7), (1, 0.5), (5, 0.9)])
def test_vllm_spec_joins_match_stepping(seed, num_blocks, perf_name, k, rate, llama):
    # the scalar forms (toy) and the numpy blocks of regular steps (llama); 120 blocks: stretches
    # end when the lookahead slots and prompts no longer fit
    perf = ToyPerf() if perf_name == "toy" else llama
    a_reqs, b_reqs = light_load(seed), light_load(seed)
    a = spec_run(a_reqs, True, num_blocks, perf, k=k, rate=rate)
    b = spec_run(b_reqs, False, num_blocks, perf, k=k, rate=rate)
    assert_same_spec_run(a, b, a_reqs, b_reqs, num_blocks)
    assert a.num_joined_arrivals > (0.5 if num_blocks > 120 else 0.3) * len(a_reqs)


@pytest.mark.parametrize("scheduler,params", JOINING)
@pytest.mark.parametrize("seed,num_blocks", [(1, 2000), (3, 120)])
def test_other_policies_spec_joins_match_stepping(scheduler, params, seed, num_blocks, llama):
    a_reqs, b_reqs = light_load_with_slo(seed), light_load_with_slo(seed)
    a = spec_run(a_reqs, True, num_blocks, llama, scheduler, params)
    b = spec_run(b_reqs, False, num_blocks, llama, scheduler, params)
    assert_same_spec_run(a, b, a_reqs, b_reqs, num_blocks)
    # (with 120 blocks whole reservations or a projection bound fill the cache: fewer)
    assert a.num_joined_arrivals > (0.6 if num_blocks > 120 else 0.2) * len(a_reqs)


def test_bursts_join_a_spec_stretch_together_and_chunked_prompts_do_not(llama):
    bursts = [[make_request(4 * i + j, 30 + 7 * j, 80 + 13 * i % 50, 0.1 * i + 1e-4 * j) for i in range(40)
               for j in range(4)] for _ in range(2)]
    # (`max_num_seqs` is checked on the running list a stretch leaves stale, its departed too:
    # room for them, or the bursts would end the stretches instead)
    a = spec_run(bursts[0], True, 2000, llama, max_num_seqs=64)
    b = spec_run(bursts[1], False, 2000, llama, max_num_seqs=64)
    assert_same_spec_run(a, b, bursts[0], bursts[1], 2000)
    assert a.num_joined_arrivals >= 100
    long_a, long_b = light_load(5, max_prompt=600), light_load(5, max_prompt=600)
    a = spec_run(long_a, True, 2000, llama, max_num_batched_tokens=300)
    b = spec_run(long_b, False, 2000, llama, max_num_batched_tokens=300)
    assert_same_spec_run(a, b, long_a, long_b, 2000)
    long_prompts = [r for r in long_a if r.prompt_len > 300]
    assert long_prompts and 0 < a.num_joined_arrivals < len(long_a) - len(long_prompts)


def test_one_token_requests_do_not_join_and_stay_exact(llama):
    # a newcomer of one output token would finish in its prompt's step: the stretch ends there
    runs = [light_load(6) for _ in range(2)]
    for rs in runs:
        for r in rs[::3]:
            r.output_len = 1
    a = spec_run(runs[0], True, 2000, llama)
    b = spec_run(runs[1], False, 2000, llama)
    assert_same_spec_run(a, b, runs[0], runs[1], 2000)
    assert 0 < a.num_joined_arrivals < len(runs[0]) - len(runs[0][::3])


def test_a_policy_that_does_not_join_speculative_stretches_stays_exact(llama):
    # (batchllm's projection of every request's `max_tokens` leaves `arrivals_join` unknown;
    # prefill-first policies join as a prompt-only step: tests/replica/test_spec_stall_join.py)
    a_reqs, b_reqs = light_load(4), light_load(4)
    params = {"output_len_estimate": "max_tokens"}
    a = spec_run(a_reqs, True, 300, llama, "batchllm", params)
    b = spec_run(b_reqs, False, 300, llama, "batchllm", params)
    assert_same_spec_run(a, b, a_reqs, b_reqs, 300, REQUEST_OUTCOME)
    assert a.num_joined_arrivals == 0


def test_edf_with_mixed_tpot_targets_joins_only_when_the_order_is_known(llama):
    # per-token targets that differ leave `repeat_order` unknown: those arrivals end the stretch
    runs = [light_load(8) for _ in range(2)]
    for rs in runs:
        for r in rs[::2]:
            r.tpot_slo_s = 0.02 + 0.01 * (r.id % 3)
    a = spec_run(runs[0], True, 2000, llama, "edf", {"default_tpot_s": 0.05})
    b = spec_run(runs[1], False, 2000, llama, "edf", {"default_tpot_s": 0.05})
    assert_same_spec_run(a, b, runs[0], runs[1], 2000)
    assert 0 < a.num_joined_arrivals < 0.1 * len(runs[0])  # (only into a batch with one target)


def test_spec_joins_on_four_replicas_with_a_router_reading_every_view(reads_everything, monkeypatch):
    # stretches priced past the next arrival (lookahead), cut by a submission here, then joined;
    # the router reads every replica's counts and KV blocks while stretches (and joins) run
    joined = []
    join = stretch_join.spec_join_arrivals

    def counting(engine, st, now_s):
        ok = join(engine, st, now_s)
        joined.append(ok)
        return ok

    monkeypatch.setattr(stretch_join, "spec_join_arrivals", counting)
    sets = ["engine.num_speculative_tokens=3", "engine.spec_acceptance_rate=0.7", "workload.arrival.rate_per_s=10",
            f"router.name={reads_everything}"]
    fast = cluster_run(sets)
    num_joins = sum(joined)
    slow = cluster_run(sets, fast_forward=False)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert num_joins > 0.3 * len(fast.requests)
    assert sum(joined) == num_joins  # (stepping asked nothing)


@pytest.mark.parametrize("crash_s", [0.105, 0.12, 0.3, 0.5])
def test_crash_after_a_join_matches_stepping(crash_s):
    # a crash in the join step (0.105, 0.12: during or just after it) or later: the joiner was
    # admitted when the step started, the acceptance rows of the step in flight stay taken
    def crashed(ff: bool):
        engine, _, _, loop, _ = make_engine(num_speculative_tokens=3, spec_acceptance_rate=0.7, defer_finishes=True,
                                            rng=np.random.default_rng(3), fast_forward=ff)
        reqs = [make_request(0, 64, 300), make_request(1, 30, 200, 0.1), make_request(2, 20, 250, 0.1001)]
        lost = serve_until_crash(engine, loop, reqs, crash_s)
        return engine, reqs, lost

    (a, a_reqs, a_lost), (b, b_reqs, b_lost) = crashed(True), crashed(False)
    assert a.stretch is None and a.num_joined_arrivals == 2 and b.num_joined_arrivals == 0
    assert [r.id for r in a_lost] == [r.id for r in b_lost]
    for x, y in zip(a_reqs, b_reqs):
        assert (x.num_output_tokens, x.token_steps, x.first_token_s) == (y.num_output_tokens, y.token_steps,
                                                                         y.first_token_s)
    assert a.num_steps == b.num_steps
    assert a.spec_draws.take(20) == b.spec_draws.take(20)
    la, lb = a.recorder.step_log(100), b.recorder.step_log(100)
    for col in STEP_LOG_COLUMNS:
        assert np.array_equal(getattr(la, col), getattr(lb, col)), col
