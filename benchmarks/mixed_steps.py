"""What other users' prompts cost a request's decode, measured against simulated, per group.

Run: python benchmarks/mixed_steps.py ROWS.csv [--measured CSV] [--by-kind] [--simulate]
ROWS.csv is a per-row result file of `servesim validate --output`. For each expressible row with
at least 32 users, prompts of at least 4,000 tokens and at least 4 x the output (no attention DP),
validation/mixed.prompt_cost_ratio gives the cost of one other user's prompt in prefill steps
alone (x P0) from the measured and from the simulated TPOT; `step` is the step model's own price
of a prompt beside the other users' decodes, (mixed step - decode step) / P0. Medians per group.
A second table splits the request's closed-loop cycle, TTFT + (osl - 1) x TPOT, simulated against
measured, into its TTFT and decode parts (validation/mixed.cycle_parts). `--by-kind` splits each
group into dense and MoE models; `--simulate` plays every row again (a few minutes) and adds the
share of the other users' prompts that land inside a simulated decode (mixed.interrupting_share:
0.5 in a lock-step wave, about 1 with the users spread out).
docs/fidelity-history.md ("Mixed prefill + decode steps", "Where the decodes lose time") has the numbers.
"""

from __future__ import annotations

import argparse
import csv
import statistics

from servesim.simulation import simulate
from servesim.validation.mixed import cycle_parts, interrupting_share, long_prompt_rows, prompt_cost_ratio
from servesim.validation.recorded_parallelism import engine_parallelism
from servesim.validation.silicon import (
    ClientOptions, inexpressible_reason, read_rows, row_request_counts, row_scenario, scenario_perf_model,
)
from servesim.validation.silicon_file import DEFAULT_SILICON


def step_price(row) -> float:
    """(mixed step - decode step) / P0 in the row's step model: one prompt beside c - 1 decodes."""
    pm = scenario_perf_model(row_scenario(row))
    users, ctx = engine_parallelism(row).concurrency, row.isl + row.osl // 2
    decode = pm.step_time_s([], [ctx] * users)
    return (pm.step_time_s([(row.isl, 0)], [ctx] * (users - 1)) - decode) / pm.step_time_s([(row.isl, 0)], [])


def kind(row) -> str:
    """dense or MoE: whether the row's model routes its FFN through experts."""
    return "dense" if scenario_perf_model(row_scenario(row)).model_spec.moe is None else "MoE"


def simulated_share(row) -> float:
    """The share of the other users' prompts that land inside a simulated decode of the row."""
    result = simulate(row_scenario(row))
    end = row_request_counts(row, ClientOptions()).measured_end
    return interrupting_share(result.requests, engine_parallelism(row).concurrency, end)


def print_table(groups: dict[str, list[tuple[float, ...]]], header: str, formats: str) -> None:
    print(header)
    for name in sorted(groups, key=lambda g: (g == "all", g)):
        items = groups[name]
        meds = [statistics.median(x[i] for x in items) for i in range(len(items[0]))]
        print(f"| {name} | {len(items)} | " + " | ".join(format(m, formats) for m in meds) + " |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("rows_csv")
    ap.add_argument("--measured", default=str(DEFAULT_SILICON))
    ap.add_argument("--by-kind", action="store_true", help="split each group into dense and MoE models")
    ap.add_argument("--simulate", action="store_true", help="play the rows again for the interrupting share")
    args = ap.parse_args()
    simulated = {r["id"]: (float(r["simulated_ttft_ms"]) / 1e3, float(r["simulated_tpot_ms"]) / 1e3)
                 for r in csv.DictReader(open(args.rows_csv))}
    rows = [r for r in long_prompt_rows(read_rows(args.measured)) if r.id in simulated and inexpressible_reason(r) is None]
    ratios: dict[str, list[tuple[float, ...]]] = {}
    cycles: dict[str, list[tuple[float, ...]]] = {}
    for r in rows:
        ttft_s, tpot_s = simulated[r.id]
        ratio = (step_price(r), prompt_cost_ratio(r, tpot_s), prompt_cost_ratio(r, r.tpot_s))
        if args.simulate:
            ratio += (simulated_share(r),)
        name = f"{r.backend} {r.system}" + (f" {kind(r)}" if args.by_kind else "")
        for key in (name, "all"):
            ratios.setdefault(key, []).append(ratio)
            cycles.setdefault(key, []).append(cycle_parts(r, ttft_s, tpot_s))
    share = " simulated interrupting share |" if args.simulate else ""
    print_table(ratios, "| group | rows | step model | simulated | measured |" + share + "\n|---|---:|---:|---:|---:|"
                + ("---:|" if args.simulate else ""), ".2f")
    print()
    print_table(cycles, "| group | rows | cycle, simulated / measured - 1 | TTFT part | decode part |\n|---|---:|---:|---:|---:|", "+.1%")


if __name__ == "__main__":
    main()
