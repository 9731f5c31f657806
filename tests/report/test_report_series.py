"""Data shaping for plots: downsampled CDFs keep min and max; rebinned time series keep totals."""

from __future__ import annotations

import numpy as np

from servesim.report.series import cdf_points, rebin_timeseries, share_within


def test_small_cdf_is_exact() -> None:
    x, y = cdf_points(np.array([3.0, 1.0, np.nan, 2.0]))
    assert x.tolist() == [1.0, 2.0, 3.0]
    assert y.tolist() == [1 / 3, 2 / 3, 1.0]


def test_large_cdf_is_downsampled_keeping_min_and_max() -> None:
    values = np.random.default_rng(0).lognormal(size=1_000_000)
    x, y = cdf_points(values, max_points=2000)
    assert len(x) <= 2000
    assert x[0] == values.min() and x[-1] == values.max()
    assert y[-1] == 1.0
    assert np.all(np.diff(x) >= 0) and np.all(np.diff(y) > 0)


def test_empty_cdf() -> None:
    x, y = cdf_points(np.array([]))
    assert len(x) == 0 and len(y) == 0


def test_share_within() -> None:
    assert share_within(np.array([0.1, 0.2, 0.3, 0.4]), 0.2) == 0.5


def test_rebin_keeps_counts_and_time_weighted_levels() -> None:
    n = 5001
    rng = np.random.default_rng(1)
    ts = {
        "time_s": np.arange(n) * 0.5, "interval_s": np.full(n, 0.5),
        "arrivals": rng.integers(0, 9, n).astype(float), "num_running": rng.random(n) * 10,
        "kv_usage": rng.random(n),
    }
    out = rebin_timeseries(ts, max_points=2000)
    assert len(out["time_s"]) <= 2000
    assert out["time_s"][0] == 0.0
    assert out["interval_s"].sum() == ts["interval_s"].sum()
    assert out["arrivals"].sum() == ts["arrivals"].sum()
    weighted = (out["num_running"] * out["interval_s"]).sum()
    assert np.isclose(weighted, (ts["num_running"] * ts["interval_s"]).sum())


def test_rebin_leaves_short_series_alone() -> None:
    ts = {"time_s": np.arange(10.0), "interval_s": np.ones(10)}
    assert rebin_timeseries(ts) is ts
