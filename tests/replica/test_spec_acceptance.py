"""Acceptance by output position (`EngineConfig.spec_acceptance_curve`, `replica/spec_acceptance.py`)."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.replica.config import EngineConfig
from servesim.replica.spec_acceptance import CurveDraws, curve_rate
from servesim.replica.spec_decode import AcceptanceDraws
from tests.factories import make_engine, make_request, serve
from tests.replica.test_spec_fast_forward import run_spec, spaced_requests


def test_curve_rate_interpolates_and_holds_its_ends():
    curve = ((100, 0.5), (300, 0.9))
    assert [curve_rate(curve, p) for p in (0, 100, 200, 250, 300, 5000)] == [0.5, 0.5, 0.7, 0.8, 0.9, 0.9]


def test_curve_rejects_unsorted_positions_and_bad_rates():
    with pytest.raises(ValueError, match="increasing"):
        EngineConfig(spec_acceptance_curve=((100, 0.5), (100, 0.6)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        EngineConfig(spec_acceptance_curve=((0, 1.5),))


def test_flat_curve_draws_what_one_rate_draws():
    a, b = AcceptanceDraws(np.random.default_rng(3), 3, 0.6), CurveDraws(np.random.default_rng(3), 3, ((0, 0.6),))
    for n in (5, 1000, 700, 1):  # (across refills)
        assert a.take(n) == b.take_at(list(range(n)))


def test_counts_follow_each_rows_position():
    draws = CurveDraws(np.random.default_rng(0), 4, ((10, 0.0), (11, 1.0)))
    assert draws.take_at([0, 10, 11, 500, 3]) == [0, 0, 4, 4, 0]


def test_flat_curve_run_is_the_one_rate_run_stepped():
    a_reqs, b_reqs = spaced_requests(1, n=60), spaced_requests(1, n=60)
    a = run_spec(a_reqs, False, rate=0.6)
    b, *_ , loop, _ = make_engine(num_blocks=400, max_num_batched_tokens=256, max_num_seqs=16, num_speculative_tokens=3,
                                  spec_acceptance_curve=((0, 0.6),), rng=np.random.default_rng(7))
    serve(b, loop, b_reqs)
    assert [(r.finish_s, r.token_steps) for r in a_reqs] == [(r.finish_s, r.token_steps) for r in b_reqs]
    # with a curve the engine steps one by one; the one-rate run fast-forwards the same batch
    assert b.num_fast_forwarded_steps == 0
    assert run_spec(spaced_requests(1, n=60), True, rate=0.6).num_fast_forwarded_steps > 0.5 * a.num_steps


def test_rising_curve_accepts_only_past_its_knee():
    engine, *_ , loop, _ = make_engine(num_speculative_tokens=3, spec_acceptance_curve=((100, 0.0), (101, 1.0)))
    r = make_request(0, 32, 201)
    serve(engine, loop, [r])
    # the prompt's step emits token 1; positions 1..100 accept nothing (100 steps, one token each);
    # from position 101 every draft is accepted: 100 tokens in 25 steps of 4
    assert engine.num_steps == 1 + 100 + 25 and r.num_output_tokens == 201
