"""Fast-forwarded speculative decode steps (`replica/spec_stretch.py`) give exactly the results
of stepping one by one: requests, step log, KV blocks and the acceptance draws left over."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.replica.spec_decode import AcceptanceDraws
from tests.factories import REQUEST_OUTCOME, assert_same_run, make_engine, make_request, serve, serve_until_crash
from tests.replica.test_fast_forward import random_requests



def spaced_requests(seed: int, n: int = 150, spread: float = 10.0):
    """`random_requests` arriving `spread` times further apart (a loaded but not saturated
    replica: with a queue that never empties, no step repeats)."""
    reqs = random_requests(seed, n)
    for r in reqs:
        r.arrival_s *= spread
    return reqs


def run_spec(reqs, fast_forward: bool, scheduler: str = "vllm", num_blocks: int = 400, rate: float = 0.7,
             defer: bool = False, k: int = 3):
    engine, sched, kv, loop, _ = make_engine(num_blocks=num_blocks, scheduler=scheduler, max_num_batched_tokens=256,
                                             max_num_seqs=16, num_speculative_tokens=k, spec_acceptance_rate=rate,
                                             rng=np.random.default_rng(7), fast_forward=fast_forward,
                                             defer_finishes=defer)
    serve(engine, loop, reqs)
    engine.drain(loop.now_s)
    kv.check_all_free()
    return engine


def assert_same_spec_run(a, b, a_reqs, b_reqs, num_blocks: int) -> None:
    assert_same_run(a, b, a_reqs, b_reqs, num_blocks, REQUEST_OUTCOME + ("num_computed_tokens",))
    # the generator's stream stands at the same row: stretches took exactly the rows of their steps
    assert a.spec_draws.take(50) == b.spec_draws.take(50)


@pytest.mark.parametrize("scheduler", ["vllm", "sarathi", "sglang", "orca", "vllm-v0", "continuum"])
@pytest.mark.parametrize("seed,num_blocks", [(1, 400), (2, 2000)])
def test_spec_fast_forward_matches_stepping(scheduler, seed, num_blocks):
    a_reqs, b_reqs = spaced_requests(seed), spaced_requests(seed)
    a = run_spec(a_reqs, True, scheduler, num_blocks)
    b = run_spec(b_reqs, False, scheduler, num_blocks)
    assert_same_spec_run(a, b, a_reqs, b_reqs, num_blocks)
    # most steps (sglang with 400 blocks: 59 %, its ratio decaying once per step keeps more waiting)
    assert a.num_fast_forwarded_steps > 0.55 * a.num_steps


@pytest.mark.parametrize("scheduler", ["vllm", "sglang"])
def test_spec_fast_forward_under_kv_pressure_and_queueing(scheduler):
    a_reqs, b_reqs = random_requests(2, n=150), random_requests(2, n=150)  # preemptions, retractions
    a = run_spec(a_reqs, True, scheduler, 120)
    b = run_spec(b_reqs, False, scheduler, 120)
    assert_same_spec_run(a, b, a_reqs, b_reqs, 120)
    assert a.num_fast_forwarded_steps > 0
    assert sum(r.num_preemptions for r in b_reqs) > 0 or scheduler == "sglang"  # (SGLang reserves ahead)


@pytest.mark.parametrize("seed,num_blocks", [(3, 2000), (4, 150)])
def test_spec_stretches_through_finishes_match_stepping(seed, num_blocks):
    a_reqs, b_reqs = spaced_requests(seed), spaced_requests(seed)
    for reqs in (a_reqs, b_reqs):
        for r in reqs:  # no prefix keys: finishes may be processed late
            r.hash_ids, r.kv_block_keys = (), None
    a = run_spec(a_reqs, True, num_blocks=num_blocks, defer=True)
    b = run_spec(b_reqs, False, num_blocks=num_blocks)
    assert_same_spec_run(a, b, a_reqs, b_reqs, num_blocks)
    assert a.num_fast_forwarded_steps > 0.7 * a.num_steps


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_acceptance_extremes_match_stepping(rate):
    a_reqs, b_reqs = spaced_requests(5, n=100, spread=30), spaced_requests(5, n=100, spread=30)
    a = run_spec(a_reqs, True, rate=rate)
    b = run_spec(b_reqs, False, rate=rate)
    assert_same_spec_run(a, b, a_reqs, b_reqs, 400)
    assert a.num_fast_forwarded_steps > 0.5 * a.num_steps
    per_step = a.recorder.step_log(400).output_tokens
    if rate == 1.0:  # every speculative decode emits k + 1 = 4 tokens, or what it had left
        assert per_step.max() >= 4 * 2
    else:  # every draft is rolled back: one token per request per step, as without speculation
        assert int(per_step.sum()) == sum(r.output_len for r in a_reqs)
        assert all(len(set(r.token_steps[::2])) == len(r.token_steps) // 2 for r in a_reqs)


def test_long_lone_decode_is_one_event_and_exact():
    a, b = make_request(0, 64, 400), make_request(0, 64, 400)
    ea = run_spec([a], True)
    eb = run_spec([b], False)
    assert_same_spec_run(ea, eb, [a], [b], 400)
    assert ea.num_fast_forwarded_steps == ea.num_steps  # prompt step + every decode: one stretch
    assert ea.num_steps < 400 / 2  # about 2.5 tokens per step at acceptance 0.7, k = 3


def test_arrival_cuts_a_stretch_and_stepping_goes_on_with_the_same_draws():
    def reqs():
        return [make_request(0, 64, 300), make_request(1, 32, 50, arrival=0.37), make_request(2, 16, 80, arrival=0.9)]

    a_reqs, b_reqs = reqs(), reqs()
    a, b = run_spec(a_reqs, True), run_spec(b_reqs, False)
    assert_same_spec_run(a, b, a_reqs, b_reqs, 400)
    assert a.num_fast_forwarded_steps > 0.8 * a.num_steps


def test_crash_in_a_stretch_keeps_the_draws_of_the_step_in_flight():
    def crashed(ff: bool):
        engine, _, _, loop, _ = make_engine(num_speculative_tokens=3, spec_acceptance_rate=0.7,
                                            rng=np.random.default_rng(3), fast_forward=ff)
        reqs = [make_request(0, 64, 300), make_request(1, 40, 200)]
        lost = serve_until_crash(engine, loop, reqs, 0.5)
        return engine, reqs, lost

    (a, a_reqs, a_lost), (b, b_reqs, b_lost) = crashed(True), crashed(False)
    assert a.stretch is None and a.num_fast_forwarded_steps > 0
    assert [r.id for r in a_lost] == [r.id for r in b_lost] == [0, 1]
    for x, y in zip(a_reqs, b_reqs):
        assert (x.num_output_tokens, x.token_steps) == (y.num_output_tokens, y.token_steps)
    assert a.num_steps == b.num_steps
    assert a.spec_draws.take(20) == b.spec_draws.take(20)


def test_peeked_rows_then_skipped_equal_taken_rows():
    a = AcceptanceDraws(np.random.default_rng(9), 3, 0.6)
    b = AcceptanceDraws(np.random.default_rng(9), 3, 0.6)
    got = a.take(5) + a.peek(0, 700) + a.peek(700, 900)  # past a block end while peeking
    a.skip(1000)  # keep 1,000 of the 1,600 rows read ahead; the rest come again
    got += a.take(700)
    assert got[:5] == b.take(5)
    assert got[5:1605] == b.take(1600) and b._pos >= 0
    assert got[1605:] == got[1005:1605] + b.take(100)
