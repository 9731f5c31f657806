"""`servesim.sums`: floats summed left to right, as CPython 3.11's `sum` does, on every version."""

from __future__ import annotations

import pytest

from servesim.sums import _left_sum, left_sum


@pytest.mark.parametrize("summed", [left_sum, _left_sum])  # (this interpreter's form, and 3.12's)
def test_left_sum_adds_in_order_from_the_int_zero(summed):
    assert summed([1.0, 1e100, 1.0, -1e100]) == 0.0  # (3.12's compensated `sum`: 2.0)
    assert summed([0.1] * 10) == 0.9999999999999999  # (3.12's: 1.0)
    assert type(summed([])) is int and summed([1, 2]) == 3 and type(summed([1, 2.0])) is float
    assert repr(summed([-0.0])) == "0.0"

