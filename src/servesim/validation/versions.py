"""Constants per engine release: fit `step_overhead_s` and the front end per (engine, GPU, version).

The silicon sample records each run's engine version, and the runs of one engine on one system
differ by release (vLLM 0.16 vs 0.18 on H200: TPOT +75 % vs -4 % with one set of constants). Where
a (engine, GPU, version) key has enough rows (`min_rows`, default 20), this refits two things on
top of the shipped per-(GPU, engine) fit, each a coordinate descent over the fit's grids:

1. the per-step time against TPOT: `step_overhead_s` (CPU time per step) when the release's CPU
   work adds to the GPU step, `layer_floor_s` (GPU time per layer) when it overlaps it (SGLang's
   overlap scheduler, vLLM's async scheduling), where CPU time cannot show in the step;
2. the front end's `latency_s` and `request_s` against TTFT (a release's API server adds a fixed
   delay and a serial cost per request; the cost per prompt token stays the system's).

Only rows at even positions of the file are fitted (the odd ones are held out, so the error on
them shows what the fit generalises to); keys with fewer rows, and rows that recorded no version,
keep the (GPU, engine) constants.
The result is a list of calibration entries matched on gpu, engine and version, and front-end
profiles named `<engine>@<gpu>@<version>`.

`fit_fallback` refits, per (GPU, engine), the GPU time per layer of the rows that keep the (GPU,
engine) constants (no version, or a release with too few rows), again on even positions only.
GPU time per layer adds to the step whether or not the release overlaps CPU work with the GPU, so
one value serves both kinds of rows.
"""

from __future__ import annotations

from typing import Callable

from servesim.perf.calibration import Entry
from servesim.replica.frontend import frontend_profile, profile_name
from servesim.validation.fit import FRONTEND_GRID, PERF_GRID, coordinate_descent, spread_sample
from servesim.validation.run import row_errors
from servesim.validation.silicon import (
    GPUS, ClientOptions, SiliconRow, inexpressible_reason, row_scenario, scenario_perf_model,
)

Key = tuple[str, str, str]  # (engine, system, version)


def version_keys(rows: list[SiliconRow], engines: tuple[str, ...], min_rows: int = 20) -> dict[Key, list[SiliconRow]]:
    """(engine, system, version) -> the key's fitting rows (even positions in `rows`), for keys with
    at least `min_rows` expressible rows in all."""
    groups: dict[Key, list[tuple[int, SiliconRow]]] = {}
    for i, r in enumerate(rows):
        if r.backend in engines and r.version and inexpressible_reason(r) is None:
            groups.setdefault((r.backend, r.system, r.version), []).append((i, r))
    return {k: [r for i, r in v if i % 2 == 0] for k, v in sorted(groups.items()) if len(v) >= min_rows}


# Multipliers of the shipped value tried for the per-step time of one release.
STEP_GRID = {"step_overhead_s": PERF_GRID["step_overhead_s"], "layer_floor_s": (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 8.0, 16.0)}


def step_constant(overlap_cpu: float) -> str:
    """The constant that carries a release's per-step time: CPU time per step (`step_overhead_s`)
    when the engine's CPU work adds to the GPU step, else GPU time per layer (`layer_floor_s`):
    with an overlapping scheduler (SGLang's, vLLM's async scheduling) CPU time hides behind the GPU
    step, so per-step time that the measurements show in every decode step is GPU-side."""
    return "layer_floor_s" if overlap_cpu >= 0.5 else "step_overhead_s"


def fit_key(sample: list[SiliconRow], options: ClientOptions) -> tuple[dict[str, float], dict[str, float], float, float]:
    """(engine constants, front end, TPOT score, TTFT score) for one key's sample."""
    s = row_scenario(sample[0], options)
    constants = scenario_perf_model(s).constants
    name = step_constant(constants.overlap_cpu)
    fe_start = dict(zip(("request_s", "prompt_token_s", "latency_s"), s.frontend.constants()))
    grid = {name: STEP_GRID[name]}
    perf, tpot_score = coordinate_descent({name: getattr(constants, name)}, grid,
                                          lambda v: row_errors(sample, options, overrides=dict(v), frontend=fe_start),
                                          weights=(0.0, 1.0), relative=True, sweeps=1)
    fe_grid = {k: FRONTEND_GRID[k] for k in ("latency_s", "request_s")}
    frontend, ttft_score = coordinate_descent(fe_start, fe_grid, lambda v: row_errors(sample, options, overrides=perf, frontend=dict(v)),
                                              weights=(1.0, 0.0), relative=False, sweeps=1)
    return {k: round(v, 6) for k, v in perf.items()}, frontend, tpot_score, ttft_score


def fit_versions(rows: list[SiliconRow], engines: tuple[str, ...], options: ClientOptions = ClientOptions(),
                 min_rows: int = 20, per_key: int = 20,
                 log: Callable[[str], None] = lambda _: None) -> tuple[list[Entry], dict[str, dict[str, float]]]:
    """(calibration entries per (gpu, engine, version), front-end profiles `<engine>@<gpu>@<version>`)."""
    entries: list[Entry] = []
    frontends: dict[str, dict[str, float]] = {}
    for (engine, system, version), fit_rows in version_keys(rows, engines, min_rows).items():
        sample = spread_sample(fit_rows, per_key)
        perf, frontend, tpot, ttft = fit_key(sample, options)
        entries.append(Entry({"gpu": GPUS[system], "engine": engine, "version": version}, perf))
        frontends[frontend_profile(engine, GPUS[system], version)] = frontend
        log(f"{engine} {system} {version or '(none)'}: {perf} TPOT {tpot:.1%}; front end {frontend} TTFT {ttft:.1%}"
            f" (was {profile_name(engine, GPUS[system])})")
    return entries, frontends


def fallback_rows(rows: list[SiliconRow], engines: tuple[str, ...], min_rows: int = 20) -> dict[tuple[str, str], list[SiliconRow]]:
    """(engine, system) -> the fitting rows (even positions) that no per-release key covers."""
    keyed = set(version_keys(rows, engines, min_rows))
    groups: dict[tuple[str, str], list[SiliconRow]] = {}
    for i, r in enumerate(rows):
        if (r.backend in engines and i % 2 == 0 and inexpressible_reason(r) is None
                and (r.backend, r.system, r.version) not in keyed):
            groups.setdefault((r.backend, r.system), []).append(r)
    return dict(sorted(groups.items()))


def fit_fallback(rows: list[SiliconRow], engines: tuple[str, ...], options: ClientOptions = ClientOptions(),
                 min_rows: int = 20, per_gpu: int = 20, min_fit_rows: int = 8,
                 log: Callable[[str], None] = lambda _: None) -> list[Entry]:
    """Calibration entries {gpu, engine} -> {layer_floor_s} fitted against TPOT on `fallback_rows`
    (systems with fewer than `min_fit_rows` of them keep their constants)."""
    entries: list[Entry] = []
    for (engine, system), fit_rows in fallback_rows(rows, engines, min_rows).items():
        if len(fit_rows) < min_fit_rows:
            continue
        sample = spread_sample(fit_rows, per_gpu)
        s = row_scenario(sample[0], options)
        start = scenario_perf_model(s).constants.layer_floor_s
        perf, tpot = coordinate_descent({"layer_floor_s": start}, {"layer_floor_s": STEP_GRID["layer_floor_s"]},
                                        lambda v: row_errors(sample, options, overrides=dict(v), frontend={}),
                                        weights=(0.0, 1.0), relative=True, sweeps=1)
        entries.append(Entry({"gpu": GPUS[system], "engine": engine}, {k: round(v, 6) for k, v in perf.items()}))
        log(f"{engine} {system} ({len(sample)} of {len(fit_rows)} rows): {perf} TPOT {tpot:.1%}")
    return entries
