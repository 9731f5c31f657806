import numpy as np
import pytest

from servesim.workload.arrivals import weibull_shape_for_cv
from tests.workload.helpers import make


def times(cfg):
    return np.array([r.arrival_s for r in make(cfg).arrivals()])


def test_weibull_shape_for_cv():
    assert weibull_shape_for_cv(1.0) == pytest.approx(1.0, rel=1e-6)  # exponential
    assert weibull_shape_for_cv(0.5) == pytest.approx(2.1013, rel=1e-3)


def test_piecewise_rate_curve():
    curve = {"kind": "piecewise", "points": [[0, 2.0], [100, 10.0], [200, 0.0]], "period_s": 300}
    t = times({"arrival": {"process": "poisson", "curve": curve}, "duration_s": 3000})
    counts = np.histogram(t % 300, bins=3, range=(0, 300))[0] / 10  # per period, 10 periods
    assert counts[0] == pytest.approx(200, rel=0.1) and counts[1] == pytest.approx(1000, rel=0.05)
    assert counts[2] == 0


def test_linear_ramp_then_hold():
    curve = {"kind": "piecewise", "points": [[0, 0.0], [1000, 20.0]], "interpolation": "linear"}
    t = times({"arrival": {"process": "gamma", "cv": 2.0, "curve": curve}, "duration_s": 2000})
    assert np.sum(t < 1000) == pytest.approx(10000, rel=0.1)  # integral of the ramp
    assert np.sum(t >= 1000) == pytest.approx(20000, rel=0.1)  # held at 20/s


def test_diurnal_curve_peaks_where_asked():
    curve = {"kind": "diurnal", "peak_to_trough": 4.0, "peak_at_s": 50400}
    t = times({"arrival": {"process": "poisson", "rate_per_s": 1.0, "curve": curve}, "duration_s": 86400 * 3})
    hourly = np.histogram(t % 86400, bins=24, range=(0, 86400))[0]
    assert len(t) / (3 * 86400) == pytest.approx(1.0, rel=0.03)
    assert np.argmax(hourly) in (13, 14) and np.argmin(hourly) in (1, 2)
    assert hourly.max() / hourly.min() == pytest.approx(4.0, rel=0.25)


def test_on_off_bursts():
    cfg = {"arrival": {"process": "onoff", "rate_per_s": 20, "on_s": 5, "off_s": 15}, "duration_s": 20000}
    t = times(cfg)
    assert len(t) / 20000 == pytest.approx(20 * 5 / 20, rel=0.1)  # on a quarter of the time
    gaps = np.diff(t)
    assert gaps.std() / gaps.mean() > 2  # bursty
