"""Fit serving constants on measured runs: engine CPU/efficiency constants per (GPU, engine) and
front-end constants per engine. Pure coordinate descent over a small grid of candidate values;
the objective (median absolute error of simulated vs measured means) is supplied by the caller,
so the search itself does no I/O and holds no state.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

# Candidate multipliers of each constant's starting value, tried one constant at a time.
PERF_GRID: dict[str, tuple[float, ...]] = {
    "step_overhead_s": (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0),
    "eta_memory": (0.6, 0.7, 0.8, 0.9, 1.0, 1.1),
    "eta_compute": (0.4, 0.55, 0.7, 0.85, 1.0, 1.2),
    "ar_launch_s": (0.1, 0.25, 0.5, 1.0, 1.5),
}
# Absolute candidates of the front-end constants (seconds).
FRONTEND_GRID: dict[str, tuple[float, ...]] = {
    "latency_s": (0.0, 0.005, 0.01, 0.02, 0.04, 0.07, 0.1),
    "request_s": (0.0, 0.0005, 0.001, 0.002, 0.005, 0.01),
    "prompt_token_s": (0.0, 0.5e-6, 1e-6, 2e-6, 5e-6, 1e-5),
}
CAPS = {"eta_memory": 0.98, "eta_compute": 0.98}  # efficiencies stay below the peak


@dataclass(frozen=True)
class Errors:
    """Signed relative errors (simulated / measured - 1) of TTFT and TPOT for some rows."""

    ttft: tuple[float, ...]
    tpot: tuple[float, ...]

    def score(self, ttft_weight: float, tpot_weight: float) -> float:
        """Weighted sum of the median absolute errors (the quantity the goal is stated in)."""
        if not self.ttft:
            return float("inf")
        return (ttft_weight * statistics.median(abs(e) for e in self.ttft)
                + tpot_weight * statistics.median(abs(e) for e in self.tpot))


Objective = Callable[[Mapping[str, float]], Errors]


def coordinate_descent(start: Mapping[str, float], grid: Mapping[str, Sequence[float]], objective: Objective,
                       weights: tuple[float, float], relative: bool, sweeps: int = 2) -> tuple[dict[str, float], float]:
    """Minimise objective(values).score(*weights) one constant at a time over its grid.

    relative: grid entries multiply the starting value (else they are absolute values). Ties keep
    the current value, so the result is deterministic and never worse than the start.
    """
    best = dict(start)
    best_score = objective(best).score(*weights)
    for _ in range(sweeps):
        improved = False
        for name, candidates in grid.items():
            for c in candidates:
                value = start[name] * c if relative else c
                value = min(value, CAPS.get(name, value))
                if value == best[name]:
                    continue
                trial = {**best, name: value}
                score = objective(trial).score(*weights)
                if score < best_score - 1e-9:
                    best, best_score, improved = trial, score, True
        if not improved:
            break
    return best, best_score


def spread_sample(items: Sequence, k: int) -> list:
    """k items evenly spaced through `items` (all of them when there are at most k)."""
    n = len(items)
    if n <= k:
        return list(items)
    return [items[(i * n) // k] for i in range(k)]
