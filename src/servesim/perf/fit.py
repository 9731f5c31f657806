"""Fitting calibration constants to measured points (`servesim calibrate`).

Only a few physical constants are fitted, each shared by every point of its group:
  per (gpu, dtype): eta_compute, eta_memory, smoothing_k   (GEMM roofline), eta_attn_memory (KV reads)
  per gpu:          ar_bw_eff                              (all-reduce bandwidth)
  per engine:       step_overhead_s, layer_floor_s, ar_launch_s, eta_attn_compute, gqa_sharing
A constant is fitted only when enough points depend on it (`MIN_POINTS`). The loss is the mean
absolute log error (robust to a few odd rows); the search is coordinate descent with a golden
section per constant inside physical bounds, a few sweeps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from servesim.errors import InputError
from servesim.perf.calibration import CalibrationData, Entry
from servesim.perf.measured import Point
from servesim.perf.validate import Predictor

# (name, group, low, high, log-scale search, minimum dependent points). The bounds keep every
# constant physical (no efficiency above what well-tuned kernels reach), so that a constant fitted
# on one workload still holds on another.
PLAN = (
    ("eta_compute", ("gpu", "dtype"), 0.35, 0.9, False, 3),
    ("eta_memory", ("gpu", "dtype"), 0.7, 0.95, False, 3),
    ("smoothing_k", ("gpu", "dtype"), 1.0, 4.0, False, 6),
    ("eta_attn_memory", ("gpu", "dtype"), 0.4, 0.95, False, 6),
    ("ar_bw_eff", ("gpu",), 0.3, 1.0, False, 2),
    ("step_overhead_s", ("engine",), 1e-5, 0.05, True, 2),
    ("layer_floor_s", ("engine",), 1e-7, 2e-4, True, 3),
    ("ar_launch_s", ("engine",), 1e-7, 2e-4, True, 2),
    ("eta_attn_compute", ("engine",), 0.3, 0.8, False, 6),
    ("gqa_sharing", ("engine",), 0.0, 1.0, False, 6),
)
# Link bandwidth is hardware: fitted on operator-level all-reduce timings only, never end to end.
ONLY_METRICS = {"ar_bw_eff": ("all_reduce_time",)}
GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
SENSITIVITY = 1e-4  # a constant that moves the loss less than this over its range is left alone


@dataclass(frozen=True)
class Param:
    name: str
    match: tuple[tuple[str, str], ...]
    low: float
    high: float
    log: bool


def _keys(points: list[Point], base: CalibrationData | None, shipped_fit: bool) -> list[dict[str, str] | None]:
    """Canonical (gpu, dtype, engine) of each point; None when the model cannot play it."""
    pred = Predictor(base, shipped_fit)
    keys: list[dict[str, str] | None] = []
    for p in points:
        try:
            pm = pred.model(p, model="llama-2-7b" if p.metric == "all_reduce_time" else None)
        except InputError:
            keys.append(None)
            continue
        fitted = p.engine != "peak" and p.kind != "other"  # theoretical-peak rows pin every efficiency
        keys.append({"gpu": pm.gpu_name, "dtype": pm.dtype, "engine": pm.engine} if fitted else None)
    return keys


def plan(points: list[Point], keys: list[dict[str, str] | None]) -> list[Param]:
    params = []
    for name, group, low, high, log, minimum in PLAN:
        counts: dict[tuple, int] = {}
        for p, key in zip(points, keys):
            if key is None:
                continue
            if name in ("ar_bw_eff", "ar_launch_s") and p.tp < 2:
                continue  # only multi-GPU points say anything about communication
            if name in ONLY_METRICS and p.metric not in ONLY_METRICS[name]:
                continue
            match = tuple((g, key[g]) for g in group)
            counts[match] = counts.get(match, 0) + 1
        params.extend(Param(name, m, low, high, log) for m, n in counts.items() if n >= minimum)
    return params


class Fitter:
    def __init__(self, points: list[Point], base: CalibrationData | None, shipped_fit: bool) -> None:
        self.points = points
        self.base = base
        self.shipped_fit = shipped_fit
        self.keys = _keys(points, base, shipped_fit)
        self.values: dict[tuple, dict[str, float]] = {}

    def calibration(self) -> CalibrationData:
        entries = list(self.base.entries) if self.base else []
        entries += [Entry(dict(match), dict(vals)) for match, vals in self.values.items()]
        return CalibrationData(dict(self.base.defaults) if self.base else {}, tuple(entries))

    def loss(self, indices: list[int]) -> float:
        pred = Predictor(self.calibration(), self.shipped_fit)
        total = 0.0
        for i in indices:
            total += abs(math.log(pred.predict(self.points[i]) / self.points[i].value))
        return total / max(1, len(indices))

    def affected(self, param: Param) -> list[int]:
        return [i for i, k in enumerate(self.keys) if k is not None and all(k[g] == v for g, v in param.match)]

    def fit_param(self, param: Param, iterations: int = 14) -> None:
        idx = self.affected(param)
        slot = self.values.setdefault(param.match, {})
        previous = slot.get(param.name)

        def at(x: float) -> float:
            slot[param.name] = math.exp(x) if param.log else x
            return self.loss(idx)

        lo, hi = (math.log(param.low), math.log(param.high)) if param.log else (param.low, param.high)
        if abs(at(lo) - at(hi)) < SENSITIVITY and previous is None:
            slot.pop(param.name)
            return
        a, b = lo, hi
        c, d = b - GOLDEN * (b - a), a + GOLDEN * (b - a)
        fc, fd = at(c), at(d)
        for _ in range(iterations):
            if fc < fd:
                b, d, fd = d, c, fc
                c = b - GOLDEN * (b - a)
                fc = at(c)
            else:
                a, c, fc = c, d, fd
                d = a + GOLDEN * (b - a)
                fd = at(d)
        best = c if fc < fd else d
        candidates = [(min(fc, fd), best)]
        if previous is not None:  # never end a sweep worse than it started
            candidates.append((at(math.log(previous) if param.log else previous), math.log(previous) if param.log else previous))
        x = min(candidates)[1]
        slot[param.name] = float(f"{(math.exp(x) if param.log else x):.4g}")


def fit(points: list[Point], base: CalibrationData | None = None, shipped_fit: bool = True,
        sweeps: int = 2) -> CalibrationData:
    """The calibration (base entries plus fitted ones) that best predicts `points`."""
    fitter = Fitter(points, base, shipped_fit)
    params = plan(points, fitter.keys)
    if not params:
        raise InputError("no constant can be fitted: give at least 2-3 points per GPU/dtype or engine the catalogue knows")
    for _ in range(sweeps):
        for param in params:
            fitter.fit_param(param)
    return fitter.calibration()
