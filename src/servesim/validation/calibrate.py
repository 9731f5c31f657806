"""Fit the serving constants on the silicon sample (`servesim validate --fit`).

Three stages, each a coordinate descent (validation/fit.py) over end-to-end simulations of a
spread sample of rows:

1. per (GPU, engine): ar_launch_s, step_overhead_s and eta_memory against TPOT (decode-dominated);
2. per engine: the front end (latency_s, request_s, prompt_token_s) against TTFT;
3. per (GPU, engine): eta_compute and step_overhead_s against TTFT and TPOT together.

Constants are shared by every row of a GPU and engine (front end: of an engine); no row or
group of rows has its own factor. The result is a calibration file (entries matched on gpu and
engine) and the front-end profiles.
"""

from __future__ import annotations

from typing import Callable

from servesim.errors import InputError
from servesim.perf.calibration import CalibrationData, Entry, resolve_constants
from servesim.perf.engines import engine_profile
from servesim.validation.fit import FRONTEND_GRID, PERF_GRID, Errors, coordinate_descent, spread_sample
from servesim.validation.run import simulate_row
from servesim.validation.silicon import GPUS, ClientOptions, SiliconRow, inexpressible_reason, row_dtype

Log = Callable[[str], None]


def _errors(rows: list[SiliconRow], options: ClientOptions, perf: dict[tuple[str, str], dict[str, float]],
            frontend: dict[str, dict[str, float]]) -> Errors:
    ttft, tpot = [], []
    for row in rows:
        r = simulate_row(row, options, overrides=perf.get((row.system, row.backend)),
                         frontend=frontend.get(row.backend), calibration=None)
        ttft.append(r.ttft_error)
        tpot.append(r.tpot_error)
    return Errors(tuple(ttft), tuple(tpot))


def _runnable(rows: list[SiliconRow], options: ClientOptions) -> list[SiliconRow]:
    ok = []
    for row in rows:
        try:
            simulate_row(row, options, calibration=None)
            ok.append(row)
        except InputError:
            pass
    return ok


def fit_serving(rows: list[SiliconRow], options: ClientOptions = ClientOptions(), per_group: int = 10,
                log: Log = lambda _: None) -> tuple[CalibrationData, dict[str, dict[str, float]]]:
    """(calibration with one entry per (gpu, engine), front-end constants per engine)."""
    usable = sorted((r for r in rows if inexpressible_reason(r) is None), key=lambda r: r.id)
    groups: dict[tuple[str, str], list[SiliconRow]] = {}
    for r in usable:
        groups.setdefault((r.system, r.backend), []).append(r)
    samples = {k: _runnable(spread_sample(v, per_group), options) for k, v in sorted(groups.items())}
    perf: dict[tuple[str, str], dict[str, float]] = {}
    frontend: dict[str, dict[str, float]] = {}
    for (system, engine), sample in samples.items():  # stage 1
        c = resolve_constants(GPUS[system], row_dtype(sample[0]), engine, engine_profile(engine).constants)
        # every measured engine has a one-shot all-reduce for small messages on NVLink
        start = {**{name: getattr(c, name) for name in PERF_GRID}, "custom_allreduce": 1.0}
        grid = {k: PERF_GRID[k] for k in ("ar_launch_s", "step_overhead_s", "eta_memory")}
        perf[(system, engine)], score = coordinate_descent(
            start, grid, lambda v, s=sample, k=(system, engine): _errors(s, options, {**perf, k: dict(v)}, frontend),
            weights=(0.0, 1.0), relative=True)
        log(f"stage 1 {engine} {system}: TPOT median abs error {score:.1%} with {perf[(system, engine)]}")
    for engine in sorted({e for _, e in samples}):  # stage 2
        sample = [r for (_, e), rs in samples.items() if e == engine for r in rs]
        start = {k: 0.0 for k in FRONTEND_GRID}
        frontend[engine], score = coordinate_descent(
            start, FRONTEND_GRID, lambda v, s=sample, e=engine: _errors(s, options, perf, {**frontend, e: dict(v)}),
            weights=(1.0, 0.0), relative=False)
        log(f"stage 2 {engine}: TTFT median abs error {score:.1%} with front end {frontend[engine]}")
    for (system, engine), sample in samples.items():  # stage 3
        current = perf[(system, engine)]
        grid = {k: PERF_GRID[k] for k in ("eta_compute", "step_overhead_s")}
        perf[(system, engine)], score = coordinate_descent(
            current, grid, lambda v, s=sample, k=(system, engine): _errors(s, options, {**perf, k: dict(v)}, frontend),
            weights=(1.0, 1.0), relative=True, sweeps=1)
        log(f"stage 3 {engine} {system}: TTFT + TPOT median abs error {score:.1%} with {perf[(system, engine)]}")
    entries = tuple(Entry({"gpu": GPUS[s], "engine": e}, {k: round(v, 6) for k, v in vals.items()})
                    for (s, e), vals in sorted(perf.items()))
    return CalibrationData({}, entries), frontend
