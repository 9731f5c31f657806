"""Mixed prefill + decode steps: what other users' prompts cost a request's decode, and a fit of
`mixed_prefill_slowdown` per (GPU, engine) against TPOT of the batched rows.

In a closed loop of fixed lengths each request's decode shares its steps with about c - 1 other
users' prompts. With D the step model's decode step (every user at the mean context) and P0 one
prompt's prefill step alone, (TPOT - D) x (osl - 1) / (c - 1) / P0 is what one such prompt costs
the request's decode, in prefill steps: `prompt_cost_ratio`. Measured it is above what the
simulation gives in the long-prompt rows (docs/fidelity-history.md, "Mixed prefill + decode steps").

Where the simulation puts the prompts: `interrupting_share` (the share of the other users' prompts
whose prefill ends inside a request's decode; 0.5 in a lock-step wave, where the request prefilled
j-th sees only the c - 1 - j prompts after it; about 1 with the users spread out) and
`cycle_parts` (what a request's closed-loop cycle, TTFT + (osl - 1) x TPOT, gains or loses in its
TTFT and in its decode, simulated against measured) tell a prompt that costs a decode too little
from a prompt that lands in the wrong place (docs/fidelity-history.md, "Where the decodes lose time").

The fit (`fit_mixed`) moves `mixed_prefill_slowdown` (the prompt tokens of a step that also decodes
cost that share more of their own time) together with `seq_gpu_s` (the GPU time per sequence that
stood in for part of it), on rows at even file positions with more than 8 users; odd rows are
held out. A group keeps the term off unless the fit chooses it.
"""

from __future__ import annotations

import bisect
from typing import Callable, Iterable

from servesim.perf.calibration import Entry
from servesim.validation.batch import SEQ_GPU_GRID, batched_rows
from servesim.validation.fit import coordinate_descent, spread_sample
from servesim.validation.recorded_parallelism import engine_parallelism
from servesim.validation.run import row_errors
from servesim.validation.silicon import GPUS, ClientOptions, SiliconRow, row_scenario, scenario_perf_model

# Shares of the prompt tokens' own time added in mixed steps; 0 = off.
SLOWDOWN_GRID = (0.0, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)


def prompt_cost_ratio(row: SiliconRow, tpot_s: float, **scenario_args) -> float:
    """What one other user's prompt costs a request's decode, in prefill steps alone (x P0), for a
    row whose mean TPOT is `tpot_s` (measured or simulated), priced by the row's step model."""
    pm = scenario_perf_model(row_scenario(row, **scenario_args))
    users = engine_parallelism(row).concurrency
    decode_s = pm.step_time_s([], [row.isl + row.osl // 2] * users)
    prefill_s = pm.step_time_s([(row.isl, 0)], [])
    return (tpot_s - decode_s) * (row.osl - 1) / (users - 1) / prefill_s


def interrupting_share(requests: Iterable, users: int, measured_end: int | None = None) -> float:
    """Mean over the measured requests (finished, not warm-up, id below `measured_end`, more than
    one output token) of the number of other requests whose first token (the end of their prefill)
    falls inside the request's decode, (first token, last token], per other user (`users` - 1).
    Every request counts as an interrupter, warm-up and trailing ones included: they load the engine."""
    started = [r for r in requests if r.first_token_s is not None]
    firsts = sorted(r.first_token_s for r in started)
    counts = [bisect.bisect_right(firsts, r.finish_s) - bisect.bisect_right(firsts, r.first_token_s)
              for r in started if r.finish_s is not None and r.num_output_tokens > 1 and not r.extra.get("warmup")
              and (measured_end is None or r.id < measured_end)]
    if not counts or users < 2:
        return float("nan")
    return sum(counts) / len(counts) / (users - 1)


def cycle_parts(row: SiliconRow, ttft_s: float, tpot_s: float) -> tuple[float, float, float]:
    """(cycle, TTFT part, decode part) of a simulated row against its measurement, each a share of
    the measured cycle TTFT + (osl - 1) x TPOT: simulated / measured - 1 and the two terms it sums."""
    steps = row.osl - 1
    measured = row.ttft_s + steps * row.tpot_s
    ttft_part = (ttft_s - row.ttft_s) / measured
    decode_part = steps * (tpot_s - row.tpot_s) / measured
    return ttft_part + decode_part, ttft_part, decode_part


def long_prompt_rows(rows: list[SiliconRow], min_users: int = 32) -> list[SiliconRow]:
    """The rows where other users' prompts dominate a decode: at least `min_users` users,
    prompts of at least 4,000 tokens and at least 4 x the output, no attention DP."""
    return [r for r in rows if r.concurrency is not None and r.concurrency >= min_users and r.isl >= 4000
            and r.isl >= 4 * r.osl and engine_parallelism(r).attention_dp <= 1]


def current_seq_gpu_s(row: SiliconRow) -> float:
    """The shipped `seq_gpu_s` the row plays (its (GPU, engine) serving entry)."""
    return scenario_perf_model(row_scenario(row)).constants.seq_gpu_s


def fit_mixed(rows: list[SiliconRow], engines: tuple[str, ...] = ("vllm", "sglang", "trtllm"),
              options: ClientOptions = ClientOptions(), per_group: int = 12, min_fit_rows: int = 8,
              ttft_weight: float = 0.25, groups: tuple[tuple[str, str], ...] | None = None,
              grid: dict[str, tuple[float, ...]] | None = None,
              log: Callable[[str], None] = lambda _: None) -> list[Entry]:
    """Calibration entries {gpu, engine} -> {mixed_prefill_slowdown, seq_gpu_s}, one per group whose
    best slowdown is not 0. Objective: TPOT median absolute error + `ttft_weight` x TTFT's, on a
    spread sample of the group's even rows with more than 8 users; one sweep from the shipped values
    (grid: candidates per constant; default SLOWDOWN_GRID and SEQ_GPU_GRID plus the shipped value)."""
    entries: list[Entry] = []
    for key, fit_rows in batched_rows(rows, engines).items():
        if groups is not None and key not in groups:
            continue
        engine, system = key
        if len(fit_rows) < min_fit_rows:
            log(f"{engine} {system}: {len(fit_rows)} fitting rows, below {min_fit_rows}: off")
            continue
        sample = spread_sample(fit_rows, per_group)
        start = {"mixed_prefill_slowdown": 0.0, "seq_gpu_s": current_seq_gpu_s(sample[0])}
        candidates = grid or {"mixed_prefill_slowdown": SLOWDOWN_GRID,
                              "seq_gpu_s": tuple(sorted(set(SEQ_GPU_GRID) | {start["seq_gpu_s"]}))}

        def objective(values):
            return row_errors(sample, options, overrides=dict(values), frontend={})

        start_score = objective(start).score(ttft_weight, 1.0)
        best, score = coordinate_descent(start, candidates, objective, weights=(ttft_weight, 1.0), relative=False, sweeps=1)
        log(f"{engine} {system} ({len(sample)} of {len(fit_rows)} rows): slowdown {best['mixed_prefill_slowdown']:g}, "
            f"seq_gpu_s {start['seq_gpu_s'] * 1e6:g} -> {best['seq_gpu_s'] * 1e6:g} us, score {start_score:.1%} -> {score:.1%}")
        if best["mixed_prefill_slowdown"] > 0.0:
            entries.append(Entry({"gpu": GPUS[system], "engine": engine}, dict(best)))
    return entries
