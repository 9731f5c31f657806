"""Sums of floats that give the same bits on every CPython servesim supports.

CPython 3.12 made the built-in `sum` of floats compensated (Neumaier's summation, gh-100425): it
may differ in its last bits from the left-to-right sum that 3.10 and 3.11 make, and a result (a
summary's seconds, an admission that compares a reserve) would then depend on the interpreter.
Where the items may be floats servesim sums them with `left_sum`, left to right as 3.11's `sum`
does, so a run gives the same bits on every version with the same numpy (the golden files were
recorded on 3.11); a sum of ints keeps the built-in (exact on every version), as does a sum of
numpy scalars or arrays (numpy adds those, not the interpreter).
"""

from __future__ import annotations

import sys
from functools import reduce
from operator import add
from typing import Iterable


def _left_sum(values: Iterable) -> float | int:
    """`sum(values)` as CPython 3.11 makes it: from the int 0, each item added in turn (so 0 for
    no items, and an int for ints only)."""
    return reduce(add, values, 0)


# Before 3.12 that is the built-in itself, in C (a few times faster than `reduce` per item: SGLang
# sums its decode reserve over the batch at every admission); from 3.12 on, `reduce`.
left_sum = sum if sys.version_info < (3, 12) else _left_sum

