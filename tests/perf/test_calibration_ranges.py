"""Calibration constants outside their physical range are refused, wherever they come from."""

from __future__ import annotations

import pytest

from servesim.errors import InputError
from servesim.perf.calibration import CONSTANT_NAMES, CONSTANT_RANGES, Constants, parse_calibration, resolve_constants


def test_every_constant_has_a_range_and_its_default_is_inside():
    assert set(CONSTANT_RANGES) == set(CONSTANT_NAMES)
    parse_calibration({"defaults": vars(Constants())}, "defaults")  # raises if a default were outside


@pytest.mark.parametrize(("name", "ok", "bad"), [
    ("eta_memory", 1.0, 0.0), ("eta_memory", 1e-3, -1.0), ("eta_compute", 0.5, 1.01),
    ("gqa_sharing", 0.0, 1.5), ("smoothing_k", 1.0, 0.5), ("moe_imbalance", 1.0, 0.9),
    ("step_overhead_s", 0.0, -1e-6), ("overlap_cpu", 1.0, float("nan")),
])
def test_range_bounds(name, ok, bad):
    assert getattr(resolve_constants("h100-sxm", "bf16", "vllm", {}, overrides={name: ok}), name) == ok
    with pytest.raises(InputError, match=f"perf.overrides: constant '{name}' must be"):
        resolve_constants("h100-sxm", "bf16", "vllm", {}, overrides={name: bad})


def test_a_calibration_file_is_checked_too():
    with pytest.raises(InputError, match=r"f entries\[0\]: constant 'ar_bw_eff' must be in \(0, 1\], got 2"):
        parse_calibration({"entries": [{"match": {"gpu": "h100-sxm"}, "set": {"ar_bw_eff": 2}}]}, "f")
