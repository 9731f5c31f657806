"""Time-varying arrival rates by time warping.

A renewal process is generated at rate 1 in 'operational time' u and mapped to real time by
t = Lambda^-1(u), where Lambda(t) is the integral of the rate curve. For Poisson arrivals this
is exact (an inhomogeneous Poisson process); for Gamma/Weibull it keeps the burstiness while
following the curve. Lambda is tabulated on a fine grid and inverted by interpolation.
"""

from __future__ import annotations

import math

import numpy as np

from servesim.workload.config import RateCurveConfig

GRID_CELLS = 4096  # per period (diurnal) or per segment span: sub-second for a day


class RateCurve:
    """rate(t) and the inverse of its integral, vectorised."""

    def __init__(self, cfg: RateCurveConfig, mean_rate_per_s: float):
        if cfg.kind == "diurnal":
            period = cfg.period_s or 86400.0
            t = np.linspace(0.0, period, GRID_CELLS + 1)
            amp = (cfg.peak_to_trough - 1) / (cfg.peak_to_trough + 1)  # (max-min)/(max+min)
            w = 2 * math.pi / period
            # Closed-form integral of mean * (1 + amp * cos(w (t - peak))).
            cum = mean_rate_per_s * (t + amp / w * (np.sin(w * (t - cfg.peak_at_s)) + math.sin(w * cfg.peak_at_s)))
            self._setup(t, cum, period, mean_rate_per_s)
        else:
            times = np.array([p[0] for p in cfg.points], dtype=float)
            rates = np.array([p[1] for p in cfg.points], dtype=float)
            end = cfg.period_s or times[-1]
            pieces_t, pieces_c = [0.0], [0.0]
            knots = np.append(times, end) if end > times[-1] else times
            for i in range(len(knots) - 1):
                a, b = knots[i], knots[i + 1]
                ra = rates[i]
                rb = rates[i + 1] if (cfg.interpolation == "linear" and i + 1 < len(rates)) else ra
                sub = np.linspace(a, b, 65)[1:]  # linear ramps: the integral is quadratic
                frac = (sub - a) / (b - a)
                pieces_t.extend(sub.tolist())
                cum_seg = pieces_c[-1] + (sub - a) * (ra + 0.5 * (rb - ra) * frac)
                pieces_c.extend(cum_seg.tolist())
            tail_rate = float(rates[-1]) if cfg.period_s is None else None
            self._setup(np.array(pieces_t), np.array(pieces_c), cfg.period_s, tail_rate)

    def _setup(self, t: np.ndarray, cum: np.ndarray, period: float | None, tail_rate: float | None) -> None:
        self._t, self._cum = t, cum
        self._period = period
        self._total = float(cum[-1])  # Lambda over one period, or up to the last point
        self._tail_rate = tail_rate

    def warp(self, u: np.ndarray) -> np.ndarray:
        """Real times of operational times u (sorted); +inf past a final zero rate."""
        if self._period is not None:
            k = np.floor(u / self._total)
            return k * self._period + np.interp(u - k * self._total, self._cum, self._t)
        out = np.interp(u, self._cum, self._t)
        past = u > self._total
        if past.any():
            rate = self._tail_rate or 0.0
            out[past] = self._t[-1] + (u[past] - self._total) / rate if rate > 0 else np.inf
        return out
