"""Refactors keep results byte-identical: every golden case hashes as recorded, also where the
interpreter's built-in `sum` of floats is compensated, as it is from CPython 3.12 on."""

from __future__ import annotations

import builtins
import json
import math

import pytest

from .cases import HASHES, cases, digest

RECORDED = json.loads(HASHES.read_text())


@pytest.mark.parametrize("name", sorted(cases()))
def test_golden(name, tmp_path):
    path, overrides = cases()[name]
    assert name in RECORDED, f"no recorded hashes for {name}: run python tests/golden/regen.py"
    assert digest(path, overrides, tmp_path / "run") == RECORDED[name]


def compensated_sum(iterable, /, start=0):
    """The built-in `sum` of CPython 3.12 and later, on any version: from `start`, items added in
    turn until the total is a float, then the floats with Neumaier's compensation (gh-100425),
    which 3.10 and 3.11 do not make; an item of another type ends the compensated part."""
    it = iter(iterable)
    total = start
    if type(total) is not float:
        for item in it:
            total = total + item
            if type(total) is float:
                break
        else:
            return total
    comp = 0.0
    for item in it:
        if type(item) is not float:
            total = (total + comp if comp and math.isfinite(comp) else total) + item
            for rest in it:
                total = total + rest
            return total
        t = total + item
        comp += (total - t) + item if abs(total) >= abs(item) else (item - t) + total
        total = t
    return total + comp if comp and math.isfinite(comp) else total


def test_the_compensated_sum_is_not_the_left_to_right_one():
    values = [1.0, 1e100, 1.0, -1e100]
    assert compensated_sum(values) == 2.0 and compensated_sum(values, 0.0) == 2.0
    assert compensated_sum([1, 2]) == 3 and type(compensated_sum([])) is int
    left = 0
    for v in values:
        left += v
    assert left == 0.0


@pytest.mark.parametrize("name", sorted(cases()))
def test_golden_whatever_the_interpreters_float_sum(name, tmp_path, monkeypatch):
    """servesim sums floats left to right itself (`servesim.sums.left_sum`): under CPython 3.12's
    `sum` the golden cases hash as recorded on 3.11 (each fails where a float sum that reaches a
    result is left to the built-in)."""
    monkeypatch.setattr(builtins, "sum", compensated_sum)
    path, overrides = cases()[name]
    assert digest(path, overrides, tmp_path / "run") == RECORDED[name]
