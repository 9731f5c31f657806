"""Prefill-time constants per (GPU, engine), fitted on the low-concurrency rows.

With at most `LOW_CONCURRENCY` users the client's requests barely queue, so the measured TTFT is
the front end plus one prompt's prefill (plus the few prompts of the first wave ahead of it). Those
rows pin down what the high-concurrency rows cannot separate from queueing: how a prefill's time
grows with its length. On them servesim's shipped state was too fast at 1,024 tokens and too
slow at 8,192 (docs/fidelity-history.md, "Prefill at low concurrency"): a fixed cost per request missing,
and the per-token cost of long prompts too high.

Per (GPU, engine) this fits, by coordinate descent over absolute grids, on the rows outside
`silicon_file.held_out_ids` only (held out by measurement, so a measurement recorded twice is never
both fitted and scored as held out):

- `eta_compute_large_m`: the GEMM efficiency that steps of thousands of tokens approach
  (terms.StepTerms.eta_compute_at; the decode-sized steps keep the shipped eta_compute);
- `eta_attn_compute`: prefill (flash) attention's share of the 16-bit peak;
- `ar_bw_eff`: the share of the link bandwidth a large (prefill-sized) all-reduce reaches;
- a front-end latency added to every front-end profile of that engine on that GPU (`latency_s`,
  the fixed time between the client and the engine that the first token pays once).

Nothing is per row, model or shape.
"""

from __future__ import annotations

from typing import Callable

from servesim.perf.calibration import Entry
from servesim.validation.fit import Errors, coordinate_descent
from servesim.validation.run import row_errors
from servesim.validation.silicon import (
    GPUS, ClientOptions, SiliconRow, inexpressible_reason, row_scenario, scenario_perf_model,
)
from servesim.validation.silicon_file import held_out_ids

LOW_CONCURRENCY = 8
# Absolute candidates (the shipped value is always kept as the start).
PREFILL_GRID: dict[str, tuple[float, ...]] = {
    "eta_compute_large_m": (0.0, 0.5, 0.6, 0.7, 0.8, 0.9),
    "eta_attn_compute": (0.4, 0.5, 0.6, 0.7, 0.8),
    "ar_bw_eff": (0.6, 0.75, 0.9, 1.0),
    "latency_add_s": (0.0, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.12),
}
PERF_NAMES = ("eta_compute_large_m", "eta_attn_compute", "ar_bw_eff")
TPOT_WEIGHT = 0.25  # TPOT barely moves at low concurrency; the weight keeps it from drifting

Group = tuple[str, str]  # (engine, system)


def low_concurrency_groups(rows: list[SiliconRow], engines: tuple[str, ...],
                           max_concurrency: int = LOW_CONCURRENCY) -> dict[Group, tuple[list[SiliconRow], list[SiliconRow]]]:
    """(engine, system) -> (fitting rows, held-out rows of `held_out_ids(rows)`): the expressible
    aggregated rows with 1..max_concurrency users. Pass the whole file: the split is by measurement
    over all of `rows`."""
    held = held_out_ids(rows)
    groups: dict[Group, tuple[list[SiliconRow], list[SiliconRow]]] = {}
    for r in rows:
        if r.backend in engines and 0 < r.concurrency <= max_concurrency and inexpressible_reason(r) is None:
            fit, held_out = groups.setdefault((r.backend, r.system), ([], []))
            (held_out if r.id in held else fit).append(r)
    return dict(sorted(groups.items()))


def errors(rows: list[SiliconRow], options: ClientOptions, values: dict[str, float]) -> Errors:
    """TTFT and TPOT errors of `rows` with the perf constants and the added front-end latency of `values`."""
    added_s = values.get("latency_add_s", 0.0)

    def args_of(row: SiliconRow) -> dict:
        return {"frontend": {"latency_s": row_scenario(row, options).frontend.constants()[2] + added_s}}

    return row_errors(rows, options, args_of, overrides={k: values[k] for k in PERF_NAMES if k in values})


def shipped_values(row: SiliconRow, options: ClientOptions) -> dict[str, float]:
    """The fitted constants as the shipped files resolve them for `row`'s (GPU, engine)."""
    s = row_scenario(row, options)
    c = scenario_perf_model(s).constants
    return {**{k: float(getattr(c, k)) for k in PERF_NAMES}, "latency_add_s": 0.0}


def group_grid(row: SiliconRow, options: ClientOptions) -> dict[str, tuple[float, ...]]:
    """PREFILL_GRID with eta_compute_large_m limited to values above the group's eta_compute (or 0,
    off): large GEMMs are never less efficient than decode-sized ones."""
    s = row_scenario(row, options)
    eta_s = scenario_perf_model(s).constants.eta_compute
    large = (0.0,) + tuple(v for v in PREFILL_GRID["eta_compute_large_m"] if v > eta_s)
    return {**PREFILL_GRID, "eta_compute_large_m": large}


def fit_prefill(rows: list[SiliconRow], engines: tuple[str, ...] = ("vllm", "sglang", "trtllm"),
                options: ClientOptions = ClientOptions(), min_rows: int = 3,
                log: Callable[[str], None] = lambda _: None) -> dict[Group, dict[str, float]]:
    """Per (engine, system): the fitted values (PREFILL_GRID names), for groups with at least
    `min_rows` fitting rows. The held-out rows' errors before and after go to `log`."""
    fitted: dict[Group, dict[str, float]] = {}
    for (engine, system), (fit_rows, held_out) in low_concurrency_groups(rows, engines).items():
        if len(fit_rows) < min_rows:
            continue
        start = shipped_values(fit_rows[0], options)
        best, score = coordinate_descent(start, group_grid(fit_rows[0], options), lambda v: errors(fit_rows, options, dict(v)),
                                         weights=(1.0, TPOT_WEIGHT), relative=False, sweeps=2)
        fitted[(engine, system)] = best
        if held_out:
            before, after = errors(held_out, options, start), errors(held_out, options, best)
            log(f"{engine} {system}: {best} fit score {score:.3f}; held out ({len(held_out)} rows) TTFT "
                f"{before.score(1, 0):.1%} -> {after.score(1, 0):.1%}, TPOT {before.score(0, 1):.1%} -> {after.score(0, 1):.1%}")
    return fitted


def calibration_entries(fitted: dict[tuple, dict[str, float]]) -> list[Entry]:
    """The perf constants of `fitted` as calibration entries matched on (gpu, engine[, version]):
    keys (engine, system) or (engine, system, version), an empty version matching any release."""
    out = []
    for key, v in fitted.items():
        engine, system, version = (*key, "")[:3]
        match = {"gpu": GPUS[system], "engine": engine, **({"version": version} if version else {})}
        out.append(Entry(match, {k: round(v[k], 6) for k in PERF_NAMES}))
    return out
