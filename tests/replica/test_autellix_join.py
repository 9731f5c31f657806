"""Autellix's lone calls joining a stretch in flight (`AutellixScheduler.join`): the run, the
step log and every level decision are stepping's; the process table (service, waiting time)
is stepping's up to float grouping, as for its stretches (a stretch credits its length at once
where stepping adds each step's); and the joins happen."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.perf.build import build_perf_model
from tests.factories import REQUEST_OUTCOME, ToyPerf, assert_same_run, make_engine, make_request, serve
from tests.replica.test_fastswitch_join import fast_and_stepped, speculating

FIELDS = REQUEST_OUTCOME + ("num_computed_tokens", "first_scheduled_s", "num_preemptions")


@pytest.fixture(scope="module")
def llama():
    return build_perf_model("llama-3.1-8b", "h100-sxm")


def load(seed: int, n: int = 260, gap_s: float = 0.2, programs: bool = False):
    """Lone calls arriving while others decode (long outputs: services pass the first
    thresholds); with `programs`, every fifth a call of one of three programs."""
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(gap_s, n))
    return [make_request(i, int(rng.integers(1, 200)), int(rng.integers(2, 400)), float(t[i]),
                         program_id=(i // 5) % 3 if programs and i % 5 == 0 else None) for i in range(n)]


def run(reqs, fast_forward: bool, perf, num_blocks: int, k: int = 0, **params):
    spec = speculating(k)
    engine, sched, kv, loop, _ = make_engine(num_blocks=num_blocks, fast_forward=fast_forward, perf=perf,
                                             scheduler="autellix", defer_finishes=True,
                                             params={"base_quantum_s": 0.2, **params},
                                             max_num_batched_tokens=256, max_num_seqs=64, **spec)
    serve(engine, loop, reqs)
    engine.drain(loop.now_s)
    kv.check_all_free()
    return engine, sched


def assert_same_as_stepping(fast, slow, fast_reqs, slow_reqs, num_blocks: int) -> None:
    (a, a_sched), (b, b_sched) = fast, slow
    assert_same_run(a, b, fast_reqs, slow_reqs, num_blocks, FIELDS)
    for table in ("service_s", "wait_s", "call_service_s", "discount_s"):
        x, y = getattr(a_sched, table), getattr(b_sched, table)
        assert x.keys() == y.keys(), table
        # (a program's waiting time is not stepping's float for float on main either: its
        # calls' waits in stretches; the lone calls', which joins set, are compared)
        if table == "wait_s":  # a lone call's: the same float
            x, y = ({p: w for p, w in t.items() if isinstance(p, tuple) and p[0] == "request"} for t in (x, y))
            assert x == y
        assert all(x[p] == pytest.approx(y[p], rel=1e-9, abs=1e-9) for p in x), table
    assert b.num_joined_arrivals == 0
    if a.spec_draws is not None:
        assert a.spec_draws.take(50) == b.spec_draws.take(50)  # the stretches took exactly their steps' rows


CASES = [(perf, seed, num_blocks) for perf in ("toy", "llama") for seed, num_blocks in ((1, 2000), (2, 300), (3, 150))]


@pytest.mark.parametrize("perf_name,seed,num_blocks,k", [case + (k,) for case in CASES for k in (0, 3)])
def test_autellix_joins_match_stepping(perf_name, seed, num_blocks, k, llama):
    # with 300 and 150 blocks newcomers of level 0 preempt calls of higher levels; speculating
    # (k = 3), a joined call's level may change 0.2 s after its join: the stretch's order
    # holds up to then (`join_order_limit`), and the levels change inside the runs
    perf = ToyPerf() if perf_name == "toy" else llama
    fast_reqs, slow_reqs, fast, slow = fast_and_stepped(lambda: load(seed), run, perf, num_blocks, k)
    assert_same_as_stepping(fast, slow, fast_reqs, slow_reqs, num_blocks)
    assert fast[0].num_joined_arrivals > (0.4 if num_blocks > 150 else 0.03) * len(fast_reqs)
    if num_blocks == 150 and not k:
        assert sum(r.num_preemptions for r in fast_reqs) > 0


@pytest.mark.parametrize("k", [0, 3])
def test_program_calls_do_not_join_and_the_rest_stay_exact(k, llama):
    fast_reqs, slow_reqs, fast, slow = fast_and_stepped(lambda: load(4, programs=True), run, llama, 300, k, mode="atlas")
    assert_same_as_stepping(fast, slow, fast_reqs, slow_reqs, 300)
    joined = fast[0].num_joined_arrivals
    assert 0.2 * len(fast_reqs) < joined < len(fast_reqs) - len([r for r in fast_reqs if r.program_id is not None])
