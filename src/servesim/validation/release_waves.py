"""Front end and prefill constants of one engine release, fitted together on its rows of every concurrency.

`waves.py` fits the prefill constants per release with the front end's per-token cost held at the
system's value. For vLLM on H100 (0.18.0) and B300 (0.19.0) that cost is the error: the API server
is one serial process, so a wave of `c` prompts of 8,192 tokens reaches the engine
`c x prompt_token_s x 8,192` after its first prompt, and the fitted 5 us per token on H100 (2 us on
B300) is 41 ms (16 ms) per prompt, more than the measured mean TTFT grows per user (about 8 ms at
8,192 tokens on both systems; docs/fidelity-history.md, "vLLM on H100 and B300"). Here, per (engine,
system, version) key, a coordinate descent over the front end (`latency_s`, `request_s`,
`prompt_token_s`, absolute grids of fit.FRONTEND_GRID, latencies up to 0.3 s) and the prefill constants
(`prefill.PERF_NAMES`, the grid of prefill.group_grid) scores TTFT plus a quarter of TPOT on every
row of the key at even file positions (attention-DP rows excluded: their TTFT has its own open
question); odd rows are held out. Nothing is per row, model or shape.
"""

from __future__ import annotations

from typing import Callable

from servesim.perf.calibration import Entry
from servesim.replica.frontend import frontend_profile
from servesim.validation.fit import FRONTEND_GRID, Errors, coordinate_descent
from servesim.validation.prefill import PERF_NAMES, TPOT_WEIGHT, group_grid, shipped_values
from servesim.validation.run import row_errors
from servesim.validation.silicon import GPUS, ClientOptions, SiliconRow, inexpressible_reason, row_scenario

Key = tuple[str, str, str]  # (engine, system, version)
FRONTEND_NAMES = ("prompt_token_s", "latency_s", "request_s")
# The release fit's front-end grid: fit.FRONTEND_GRID with longer fixed latencies, since one release's
# first tokens can trail the others' by more than 0.1 s at every concurrency (TensorRT-LLM B200
# 1.1.0rc2.post2: 130-230 ms at 4 users; docs/fidelity-history.md).
RELEASE_FRONTEND_GRID = {**FRONTEND_GRID, "latency_s": FRONTEND_GRID["latency_s"] + (0.15, 0.2, 0.3)}


def key_rows(rows: list[SiliconRow], key: Key) -> tuple[list[SiliconRow], list[SiliconRow]]:
    """(fitting rows at even file positions, held-out rows at odd ones) of `key`, without attention DP."""
    even: list[SiliconRow] = []
    odd: list[SiliconRow] = []
    for i, r in enumerate(rows):
        if (r.backend, r.system, r.version) == key and r.attention_dp <= 1 and inexpressible_reason(r) is None:
            (even if i % 2 == 0 else odd).append(r)
    return even, odd


def errors(rows: list[SiliconRow], options: ClientOptions, values: dict[str, float]) -> Errors:
    """TTFT and TPOT errors of `rows` with the front-end and perf constants of `values`."""
    frontend = {k: values[k] for k in FRONTEND_NAMES}
    return row_errors(rows, options, frontend=frontend, overrides={k: values[k] for k in PERF_NAMES})


def start_values(row: SiliconRow, options: ClientOptions) -> dict[str, float]:
    """The shipped constants `row` plays: its front-end profile's and the calibration's."""
    request_s, prompt_token_s, latency_s = row_scenario(row, options).frontend.constants()
    perf = {k: v for k, v in shipped_values(row, options).items() if k in PERF_NAMES}
    return {"prompt_token_s": prompt_token_s, "latency_s": latency_s, "request_s": request_s, **perf}


def fit_release(rows: list[SiliconRow], key: Key, options: ClientOptions = ClientOptions(), sweeps: int = 2,
                names: tuple[str, ...] = FRONTEND_NAMES + PERF_NAMES,
                log: Callable[[str], None] = lambda _: None) -> dict[str, float]:
    """The fitted values (FRONTEND_NAMES and prefill.PERF_NAMES; only `names` move, the others
    keep the shipped values) of `key`; the held-out errors go to `log`."""
    fit_rows, held_out = key_rows(rows, key)
    if not fit_rows:
        raise ValueError(f"no expressible rows for {key}")
    start = start_values(fit_rows[0], options)
    full = {**{k: RELEASE_FRONTEND_GRID[k] for k in FRONTEND_NAMES},
            **{k: v for k, v in group_grid(fit_rows[0], options).items() if k in PERF_NAMES}}
    grid = {k: full[k] for k in names}
    best, score = coordinate_descent(start, grid, lambda v: errors(fit_rows, options, dict(v)),
                                     weights=(1.0, TPOT_WEIGHT), relative=False, sweeps=sweeps)
    before, after = errors(held_out, options, start), errors(held_out, options, best)
    log(f"{' '.join(key)}: {best} fit score {score:.3f} on {len(fit_rows)} rows; held out ({len(held_out)} rows) "
        f"TTFT {before.score(1, 0):.1%} -> {after.score(1, 0):.1%}, TPOT {before.score(0, 1):.1%} -> {after.score(0, 1):.1%}")
    return best


def shipped_form(key: Key, values: dict[str, float]) -> tuple[Entry, str, dict[str, float]]:
    """(calibration entry, front-end profile name, its constants) for `key`'s fitted values."""
    engine, system, version = key
    entry = Entry({"gpu": GPUS[system], "engine": engine, "version": version}, {k: round(values[k], 6) for k in PERF_NAMES})
    return entry, frontend_profile(engine, GPUS[system], version), {k: values[k] for k in FRONTEND_NAMES}
