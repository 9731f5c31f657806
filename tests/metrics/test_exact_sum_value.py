"""ExactSum.value: the exact sum of the values rounded once, as the sum of Fractions gives it."""

from fractions import Fraction

import numpy as np
import pytest

from servesim.metrics.exact import ExactSum


def _fraction_sum(values: np.ndarray) -> float:
    return float(sum((Fraction(v) for v in values.tolist()), Fraction(0)))


def _cases():
    rng = np.random.default_rng(3)
    yield "empty", np.empty(0)
    yield "zeros", np.zeros(5)
    yield "one", np.array([0.1])
    yield "latencies", rng.exponential(0.05, 20_000)
    yield "mixed signs", rng.normal(0, 1e3, 5_000)
    yield "cancelling", np.array([1e308, 1.0, -1e308, 2.0 ** -1074])
    yield "subnormals", np.array([2.0 ** -1074, 3 * 2.0 ** -1074, -2.0 ** -1060])
    yield "wide", np.concatenate([rng.uniform(1, 2, 100) * 10.0 ** rng.integers(-300, 300, 100), [1e-320]])
    yield "halfway", np.array([1.0, 2.0 ** -53])  # (ties round to even: 1.0)


@pytest.mark.parametrize("name, values", list(_cases()), ids=[c[0] for c in _cases()])
def test_value_is_the_sum_of_fractions_rounded_once(name, values):
    s = ExactSum()
    for part in np.array_split(values, 3) if len(values) else [values]:
        s.add(part)
    got = s.value()
    assert type(got) is float
    assert got.hex() == _fraction_sum(values).hex()
    if name == "cancelling":
        assert got == 1.0 and float(values.sum()) != got  # (a float sum loses the 1.0)
