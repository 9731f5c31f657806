"""Fit the serving constants on the silicon sample (`servesim validate --fit`).

Three stages, each a coordinate descent (validation/fit.py) over end-to-end simulations of a
spread sample of rows:

1. per (GPU, engine): ar_launch_s, step_overhead_s and eta_memory against TPOT (decode-dominated);
2. per engine: the front end (latency_s, request_s, prompt_token_s) against TTFT;
3. per (GPU, engine): eta_compute and step_overhead_s against TTFT and TPOT together;
4. per (GPU, engine): the front end again, from the engine's, against TTFT (the API server runs
   on the host CPU of each system, which differs between the measured systems).

Constants are shared by every row of a GPU and engine; no row or group of rows has its own
factor. The result is a calibration file (entries matched on gpu and engine) and the front-end
profiles, named `<engine>` and `<engine>@<gpu>`.
"""

from __future__ import annotations

from typing import Callable, Collection

from servesim.errors import InputError
from servesim.perf.calibration import CalibrationData, Entry, resolve_constants
from servesim.perf._catalog import catalogue
from servesim.perf.engines import engine_profile
from servesim.replica.frontend import FRONTEND_FILE
from servesim.validation.fit import FRONTEND_GRID, PERF_GRID, Errors, coordinate_descent, spread_sample
from servesim.validation.run import row_errors, simulate_row
from servesim.replica.frontend import frontend_profile
from servesim.validation.silicon import GPUS, ClientOptions, SiliconRow, inexpressible_reason, row_dtype

Log = Callable[[str], None]
NO_FRONTEND = {"latency_s": 0.0, "request_s": 0.0, "prompt_token_s": 0.0}


def _errors(rows: list[SiliconRow], options: ClientOptions, perf: dict[tuple[str, str], dict[str, float]],
            frontend: dict[str, dict[str, float]], calibration: str | None = None) -> Errors:
    def args_of(row: SiliconRow) -> dict:
        fe = frontend.get(frontend_profile(row.backend, GPUS[row.system]), frontend.get(row.backend, NO_FRONTEND))
        return {"overrides": perf.get((row.system, row.backend)), "frontend": fe}

    return row_errors(rows, options, args_of, calibration=calibration)


def _runnable(rows: list[SiliconRow], options: ClientOptions) -> list[SiliconRow]:
    ok = []
    for row in rows:
        try:
            simulate_row(row, options, calibration=None)
            ok.append(row)
        except InputError:
            pass
    return ok


def group_samples(rows: list[SiliconRow], options: ClientOptions, per_group: int) -> dict[tuple[str, str], list[SiliconRow]]:
    """(system, engine) -> up to per_group runnable rows spread through the group (sorted by id)."""
    usable = sorted((r for r in rows if inexpressible_reason(r) is None), key=lambda r: r.id)
    groups: dict[tuple[str, str], list[SiliconRow]] = {}
    for r in usable:
        groups.setdefault((r.system, r.backend), []).append(r)
    return {k: _runnable(spread_sample(v, per_group), options) for k, v in sorted(groups.items())}


def fit_serving(rows: list[SiliconRow], options: ClientOptions = ClientOptions(), per_group: int = 10,
                log: Log = lambda _: None) -> tuple[CalibrationData, dict[str, dict[str, float]]]:
    """(calibration with one entry per (gpu, engine), front-end constants per engine)."""
    samples = group_samples(rows, options, per_group)
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
    fit_frontends_per_gpu(samples, options, perf, frontend, log)
    return to_calibration(perf), frontend


def refit_frontends(rows: list[SiliconRow], options: ClientOptions = ClientOptions(), per_group: int = 10,
                    log: Log = lambda _: None, engines: Collection[str] = ()) -> dict[str, dict[str, float]]:
    """Stage 4 alone: the `<engine>@<gpu>` front ends refitted with the shipped engine constants,
    each started from the shipped profile (after a change to the client or the engine limits,
    which moves TTFT but hardly TPOT; a whole fit takes many times longer). `engines`: refit only
    these engines' profiles (the others are returned as shipped); empty: all."""
    samples = group_samples([r for r in rows if not engines or r.backend in engines], options, per_group)
    shipped = catalogue(FRONTEND_FILE)
    frontend = {name: {k: float(shipped[name][k]) for k in FRONTEND_GRID} for name in shipped}
    fit_frontends_per_gpu(samples, options, {}, frontend, log, calibration="shipped")
    return frontend


def fit_frontends_per_gpu(samples: dict[tuple[str, str], list[SiliconRow]], options: ClientOptions,
                          perf: dict[tuple[str, str], dict[str, float]], frontend: dict[str, dict[str, float]],
                          log: Log, calibration: str | None = None) -> None:
    """Stage 4: add `<engine>@<gpu>` front-end entries to `frontend`, each started from the
    existing entry of that name, else from the engine's."""
    for (system, engine), sample in samples.items():
        name = frontend_profile(engine, GPUS[system])
        start = dict(frontend.get(name, frontend[engine]))
        frontend[name], score = coordinate_descent(
            start, FRONTEND_GRID,
            lambda v, s=sample, n=name: _errors(s, options, perf, {**frontend, n: dict(v)}, calibration),
            weights=(1.0, 0.0), relative=False, sweeps=1)
        log(f"stage 4 {name}: TTFT median abs error {score:.1%} with front end {frontend[name]}")


def to_calibration(perf: dict[tuple[str, str], dict[str, float]]) -> CalibrationData:
    entries = tuple(Entry({"gpu": GPUS[s], "engine": e}, {k: round(v, 6) for k, v in vals.items()})
                    for (s, e), vals in sorted(perf.items()))
    return CalibrationData({}, entries)
