"""eta_compute_large_m: GEMM efficiency that rises with the step's tokens (off by default)."""

from __future__ import annotations

import pytest

from servesim.errors import InputError
from servesim.perf import build_perf_model
from servesim.perf.config import PerfConfig


def _model(**overrides):
    return build_perf_model("llama-3.1-8b", "h100-sxm", 1, "bf16", PerfConfig(overrides=overrides))


def test_off_by_default_is_the_plain_eta_compute():
    plain = _model()
    assert plain.constants.eta_compute_large_m == 0.0
    for m in (1, 256, 8192):
        assert plain.terms.eta_compute_at(m) == plain.constants.eta_compute
    # Setting it to 0 explicitly changes nothing, bit for bit.
    zero = _model(eta_compute_large_m=0.0, gemm_m_half_tokens=512.0)
    assert zero.step_time_s([(8192, 0)], []) == plain.step_time_s([(8192, 0)], [])


def test_efficiency_is_halfway_at_the_half_point_and_saturates():
    pm = _model(eta_compute=0.4, eta_compute_large_m=0.8, gemm_m_half_tokens=1000.0)
    t = pm.terms
    assert t.eta_compute_at(1000) == pytest.approx(0.6)
    assert t.eta_compute_at(3000) == pytest.approx(0.4 + 0.4 * 0.75)
    assert t.eta_compute_at(1) == pytest.approx(0.4 + 0.4 / 1001)


def test_large_prefills_speed_up_and_small_decode_steps_barely_move():
    base = _model(eta_compute=0.4)
    fast = _model(eta_compute=0.4, eta_compute_large_m=0.8, gemm_m_half_tokens=2048.0)
    # A compute-bound 8,192-token prefill: eta(8192) = 0.4 + 0.4 * 0.8 = 0.72, so the GEMM time
    # shrinks by up to 0.72 / 0.4 = 1.8x (less the memory side of the smoothed roofline).
    ratio = base.terms.linear_s(8192) / fast.terms.linear_s(8192)
    assert 1.7 < ratio <= 1.8
    # A decode step of 8 sequences is memory-bound: within 0.5 %.
    assert fast.step_time_s([], [1024] * 8) == pytest.approx(base.step_time_s([], [1024] * 8), rel=5e-3)


@pytest.mark.parametrize(("name", "bad"), [("eta_compute_large_m", 1.2), ("eta_compute_large_m", -0.1),
                                           ("gemm_m_half_tokens", 0.0)])
def test_out_of_range_values_are_refused(name, bad):
    with pytest.raises(InputError, match=f"constant '{name}' must be"):
        _model(**{name: bad})
