"""The coordinate-descent fit of the serving constants (pure; exact on synthetic objectives)."""

from __future__ import annotations

import pytest

from servesim.validation.fit import Errors, coordinate_descent, spread_sample


def test_errors_score_is_weighted_median_abs():
    e = Errors(ttft=(-0.5, 0.1, 0.2), tpot=(0.3, -0.3, 0.0))
    assert e.score(1.0, 0.0) == pytest.approx(0.2)
    assert e.score(1.0, 2.0) == pytest.approx(0.2 + 0.6)
    assert Errors((), ()).score(1.0, 1.0) == float("inf")


def test_descent_finds_the_grid_optimum_one_constant_at_a_time():
    # simulated = value / truth: error 0 at a = 2 (x start 1) and b = 0.005 (absolute grid)
    def objective(v):
        return Errors(ttft=(v["a"] / 2.0 - 1.0,), tpot=(v["b"] / 0.005 - 1.0,))

    best, score = coordinate_descent({"a": 1.0, "b": 0.0}, {"a": (0.5, 1.0, 2.0, 3.0), "b": (0.0, 0.005, 0.01)},
                                     objective, weights=(1.0, 0.0), relative=True)
    assert best["a"] == 2.0 and score == 0.0
    best, score = coordinate_descent({"a": 1.0, "b": 0.0}, {"b": (0.0, 0.005, 0.01)}, objective,
                                     weights=(0.0, 1.0), relative=False)
    assert best == {"a": 1.0, "b": 0.005} and score == 0.0


def test_descent_caps_efficiencies_and_keeps_start_on_ties():
    calls = []

    def flat(v):
        calls.append(dict(v))
        return Errors((0.1,), (0.1,))

    best, _ = coordinate_descent({"eta_memory": 0.9}, {"eta_memory": (1.0, 1.2)}, flat, (1.0, 1.0), relative=True)
    assert best == {"eta_memory": 0.9}  # nothing better: the start stays
    assert {"eta_memory": 0.98} in calls  # 0.9 * 1.2 capped below the peak


def test_spread_sample_is_even_and_deterministic():
    assert spread_sample(list(range(10)), 3) == [0, 3, 6]
    assert spread_sample([1, 2], 5) == [1, 2]
