"""SGLang's eager prefill steps: fit the step constants per (GPU, engine) on the serving runs.

SGLang captures CUDA graphs for decode batches only: extend and mixed batches (every step with
prompt tokens) run eagerly, every kernel launched from Python (`enable_piecewise_cuda_graph`
defaults to False in the releases of the silicon sample), so a small prefill is launch-bound and
every prefill step stalls the running decodes for longer than its GPU work. servesim prices that
as `eager_layer_s` per layer of such a step (perf constant, 0 by default; perf/perf_model.py).

The per-(GPU, engine) decode constants were fitted without it, so they absorbed its effect where
they could: a CPU floor per step (`step_overhead_s`, which the overlap scheduler shows as a floor
of every decode step) and GPU time per sequence (`seq_gpu_s`). This refits the four together, by
coordinate descent over absolute grids on a spread sample of the group's rows at even file
positions (the odd ones are held out), against TTFT + TPOT:

- `eager_layer_s`, `step_overhead_s`, `seq_gpu_s` (the (GPU, engine) calibration entry);
- a front-end latency added to every front-end profile of that engine on that GPU (`latency_s`
  floored at 0): a slower prefill step moves into the engine time the front end stood in for.

Coordinate descent moves one constant at a time: more eager time alone lengthens every first token
before the front end's latency can give it back, so check a shipped choice against joint moves
(docs/fidelity-history.md does so by hand for B200). Nothing is per row, model or shape.
"""

from __future__ import annotations

from typing import Callable

from servesim.perf.calibration import Entry
from servesim.validation.fit import Errors, coordinate_descent, spread_sample
from servesim.validation.run import row_errors
from servesim.validation.silicon import (
    GPUS, ClientOptions, SiliconRow, inexpressible_reason, row_scenario, scenario_perf_model,
)

# Absolute candidates (the shipped value is always kept as the start).
EAGER_GRID: dict[str, tuple[float, ...]] = {
    "eager_layer_s": (0.0, 0.1e-3, 0.2e-3, 0.4e-3, 0.8e-3),
    "step_overhead_s": (0.002, 0.004, 0.006, 0.009, 0.015),
    "seq_gpu_s": (0.0, 15e-6, 30e-6, 45e-6, 60e-6),
    "latency_add_s": (-0.12, -0.08, -0.04, 0.0, 0.04),
}
PERF_NAMES = ("eager_layer_s", "step_overhead_s", "seq_gpu_s")

Group = tuple[str, str]  # (engine, system)


def split_rows(rows: list[SiliconRow], engine: str, system: str) -> tuple[list[SiliconRow], list[SiliconRow]]:
    """(rows at even positions of `rows`, rows at odd ones): the group's expressible rows."""
    even: list[SiliconRow] = []
    odd: list[SiliconRow] = []
    for i, r in enumerate(rows):
        if r.backend == engine and r.system == system and inexpressible_reason(r) is None:
            (even if i % 2 == 0 else odd).append(r)
    return even, odd


def errors(rows: list[SiliconRow], options: ClientOptions, values: dict[str, float]) -> Errors:
    """TTFT and TPOT errors of `rows` with the perf constants and the added front-end latency of `values`."""
    added_s = values.get("latency_add_s", 0.0)

    def args_of(row: SiliconRow) -> dict:
        return {"frontend": {"latency_s": max(0.0, row_scenario(row, options).frontend.constants()[2] + added_s)}}

    return row_errors(rows, options, args_of, overrides={k: values[k] for k in PERF_NAMES if k in values})


def shipped_values(row: SiliconRow, options: ClientOptions) -> dict[str, float]:
    """The constants this fit moves, as the shipped files resolve them for `row`'s (GPU, engine)."""
    s = row_scenario(row, options)
    c = scenario_perf_model(s).constants
    return {**{k: float(getattr(c, k)) for k in PERF_NAMES}, "latency_add_s": 0.0}


def fit_eager(rows: list[SiliconRow], systems: tuple[str, ...], engine: str = "sglang",
              options: ClientOptions = ClientOptions(), per_group: int = 32, sweeps: int = 2,
              grid: dict[str, tuple[float, ...]] | None = None,
              log: Callable[[str], None] = lambda _: None) -> dict[Group, dict[str, float]]:
    """Per (engine, system): the fitted values (EAGER_GRID names) on `per_group` even rows; the
    held-out odd rows' errors (a spread sample of the same size) before and after go to `log`."""
    fitted: dict[Group, dict[str, float]] = {}
    for system in systems:
        even, odd = split_rows(rows, engine, system)
        if not even:
            continue
        sample, held_out = spread_sample(even, per_group), spread_sample(odd, per_group)
        start = shipped_values(sample[0], options)
        best, score = coordinate_descent(start, grid or EAGER_GRID, lambda v: errors(sample, options, dict(v)),
                                         weights=(1.0, 1.0), relative=False, sweeps=sweeps)
        fitted[(engine, system)] = best
        before, after = errors(held_out, options, start), errors(held_out, options, best)
        log(f"{engine} {system}: {best} fit score {score:.3f}; held out ({len(held_out)} rows) TTFT "
            f"{before.score(1, 0):.1%} -> {after.score(1, 0):.1%}, TPOT {before.score(0, 1):.1%} -> {after.score(0, 1):.1%}")
    return fitted


def calibration_entries(fitted: dict[Group, dict[str, float]]) -> list[Entry]:
    """The perf constants of `fitted` as calibration entries matched on (gpu, engine)."""
    return [Entry({"gpu": GPUS[system], "engine": engine}, {k: round(v[k], 9) for k in PERF_NAMES})
            for (engine, system), v in fitted.items()]
