"""eta_moe_compute: the MoE expert GEMMs' own share of peak FLOP/s (off by default)."""

from __future__ import annotations

import pytest

from servesim.errors import InputError
from servesim.perf import build_perf_model
from servesim.perf.config import PerfConfig


def _model(name="qwen3-235b-a22b", tp=2, **overrides):
    return build_perf_model(name, "h200", tp, "fp8", PerfConfig(overrides=overrides))


def test_off_by_default_and_zero_change_nothing():
    plain = _model()
    assert plain.constants.eta_moe_compute == 0.0
    zero = _model(eta_moe_compute=0.0)
    for step in (([(4000, 0)], []), ([], [1000] * 8), ([(512, 0)], [2000] * 4)):
        assert zero.step_time_s(*step) == plain.step_time_s(*step)


def test_dense_models_ignore_it():
    plain = _model("llama-3.1-8b", tp=1)
    set_ = _model("llama-3.1-8b", tp=1, eta_moe_compute=0.1)
    assert set_.step_time_s([(4000, 0)], []) == plain.step_time_s([(4000, 0)], [])


def test_moe_prefill_slows_with_the_kernel_eta_and_decode_barely_moves():
    base = _model(eta_compute=0.5)
    slow = _model(eta_compute=0.5, eta_moe_compute=0.125)
    # Only the MoE blocks change: attention / dense GEMMs are priced as before.
    assert slow.terms.linear_s(4000, moe=False) == base.terms.linear_s(4000, moe=False)
    # A 4,000-token prefill's expert GEMMs are compute-bound: 4x less efficient is close to 4x slower.
    ratio = slow.terms.linear_s(4000, moe=True) / base.terms.linear_s(4000, moe=True)
    assert 3.5 < ratio <= 4.0
    # A decode step of 8 sequences reads the touched experts' weights: within 5 %.
    assert slow.step_time_s([], [1000] * 8) == pytest.approx(base.step_time_s([], [1000] * 8), rel=0.05)
    assert slow.step_time_s([(4000, 0)], []) > 1.5 * base.step_time_s([(4000, 0)], [])


@pytest.mark.parametrize("bad", [1.5, -0.1])
def test_out_of_range_values_are_refused(bad):
    with pytest.raises(InputError, match="constant 'eta_moe_compute' must be"):
        _model(eta_moe_compute=bad)


def test_the_reported_compute_side_follows_the_expert_gemms():
    base, slow = _model(eta_compute=0.5), _model(eta_compute=0.5, eta_moe_compute=0.125)
    assert _model(eta_moe_compute=0.0).terms.linear_compute_memory_s(4000) == _model().terms.linear_compute_memory_s(4000)
    (c0, m0), (c1, m1) = base.terms.linear_compute_memory_s(4000), slow.terms.linear_compute_memory_s(4000)
    assert m1 == m0 and 2.0 < c1 / c0 < 4.0  # attention / dense GEMMs keep their eta, the experts take 4x longer
