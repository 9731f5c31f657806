"""`servesim.sums`: floats summed left to right, as CPython 3.11's `sum` does, on every version."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.sums import _left_sum, left_sum, left_sum_array


@pytest.mark.parametrize("summed", [left_sum, _left_sum])  # (this interpreter's form, and 3.12's)
def test_left_sum_adds_in_order_from_the_int_zero(summed):
    assert summed([1.0, 1e100, 1.0, -1e100]) == 0.0  # (3.12's compensated `sum`: 2.0)
    assert summed([0.1] * 10) == 0.9999999999999999  # (3.12's: 1.0)
    assert type(summed([])) is int and summed([1, 2]) == 3 and type(summed([1, 2.0])) is float
    assert repr(summed([-0.0])) == "0.0"


def test_the_array_form_gives_the_same_bits():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 100, 1000):
        a = rng.standard_normal(n) * 10.0 ** rng.integers(-8, 8, n)
        assert left_sum_array(a).hex() == _left_sum(a.tolist()).hex()
    assert repr(left_sum_array(np.array([-0.0, -0.0]))) == "0.0"  # (np.add.accumulate: -0.0)
    assert left_sum_array(np.array([0.1] * 10)) == 0.9999999999999999

