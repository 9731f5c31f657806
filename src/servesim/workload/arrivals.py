"""Open-loop arrival processes: times in seconds, non-decreasing, generated in numpy blocks.

Renewal processes (Poisson, Gamma, Weibull) draw unit-mean inter-arrival times, so a rate
curve can warp them (see rate_curve.py); with a constant rate they are simply divided by it.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np

from servesim.workload.config import ArrivalConfig
from servesim.workload.rate_curve import RateCurve
from servesim.workload.sampling import BLOCK

DEFAULT_RATE_PER_S = 1.0
RENEWAL_PROCESSES = ("poisson", "gamma", "weibull")  # (unit_interarrivals draws them)


def weibull_shape_for_cv(cv: float) -> float:
    """Weibull shape k whose inter-arrival CV is `cv` (CV decreases monotonically in k)."""

    def cv_of(k: float) -> float:
        g1 = math.lgamma(1 + 1 / k)
        g2 = math.lgamma(1 + 2 / k)
        return math.sqrt(max(math.exp(g2 - 2 * g1) - 1, 0.0))

    lo, hi = 0.02, 500.0  # CV from ~1e13 down to ~0.003
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        if cv_of(mid) > cv:
            lo = mid
        else:
            hi = mid
    return math.sqrt(lo * hi)


def unit_interarrivals(process: str, cv: float, rng: np.random.Generator, n: int) -> np.ndarray:
    """n inter-arrival times with mean 1 and the given CV (Poisson ignores cv)."""
    if process == "poisson":
        return rng.exponential(1.0, size=n)
    if process == "gamma":
        shape = 1.0 / (cv * cv)  # Gamma(k, theta): CV = 1/sqrt(k), mean = k * theta
        return rng.gamma(shape, 1.0 / shape, size=n)
    if process == "weibull":
        k = weibull_shape_for_cv(cv)
        return rng.weibull(k, size=n) / math.gamma(1 + 1 / k)
    raise ValueError(f"not a renewal process: {process!r}")


def renewal_blocks(cfg: ArrivalConfig, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Arrival times of a Poisson/Gamma/Weibull process, optionally following a rate curve,
    BLOCK at a time (float64 arrays, non-decreasing; inf once a curve's rate ends)."""
    rate = cfg.rate_per_s or DEFAULT_RATE_PER_S
    curve = RateCurve(cfg.curve, rate) if cfg.curve is not None else None
    u = 0.0  # operational time (for a constant rate: expected arrivals so far)
    while True:
        cum = u + np.cumsum(unit_interarrivals(cfg.process, cfg.cv, rng, BLOCK))
        u = float(cum[-1])
        yield curve.warp(cum) if curve is not None else cum / rate


def renewal_times(cfg: ArrivalConfig, rng: np.random.Generator) -> Iterator[float]:
    """`renewal_blocks` one time at a time, ending at the first inf."""
    for times in renewal_blocks(cfg, rng):
        for t in times.tolist():
            if t == math.inf:
                return
            yield t


def onoff_times(cfg: ArrivalConfig, rng: np.random.Generator) -> Iterator[float]:
    """Bursts: exponential on/off periods; Poisson at rate_per_s when on, off_rate_per_s when off."""
    rate_on = cfg.rate_per_s or DEFAULT_RATE_PER_S
    t0 = 0.0
    on = True
    while True:
        length = rng.exponential(cfg.on_s if on else cfg.off_s)
        rate = rate_on if on else cfg.off_rate_per_s
        n = rng.poisson(rate * length) if rate > 0 else 0
        if n:
            yield from (t0 + np.sort(rng.uniform(0.0, length, size=n))).tolist()
        t0 += length
        on = not on


def open_loop_times(cfg: ArrivalConfig, rng: np.random.Generator) -> Iterator[float]:
    """The arrival-time stream of an open-loop process (not closed, not servegen)."""
    if cfg.process == "onoff":
        return onoff_times(cfg, rng)
    return renewal_times(cfg, rng)
