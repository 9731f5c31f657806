"""What other users' prompts cost a request's decode, measured against simulated, per group.

Run: python benchmarks/mixed_steps.py ROWS.csv [--measured CSV]
ROWS.csv is a per-row result file of `servesim validate --output`. For each expressible row with
at least 32 users, prompts of at least 4,000 tokens and at least 4 x the output (no attention DP),
validation/mixed.prompt_cost_ratio gives the cost of one other user's prompt in prefill steps
alone (x P0) from the measured and from the simulated TPOT; `step` is the step model's own price
of a prompt beside the other users' decodes, (mixed step - decode step) / P0. Medians per group.
docs/fidelity.md ("Mixed prefill + decode steps") has the numbers.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

from servesim.validation.mixed import long_prompt_rows, prompt_cost_ratio
from servesim.validation.recorded_parallelism import engine_parallelism
from servesim.validation.silicon import inexpressible_reason, read_rows, row_scenario, scenario_perf_model

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / ".." / "shared" / "data" / "perf" / "aiconfigurator_silicon" / "silicon_calibration.csv"


def step_price(row) -> float:
    """(mixed step - decode step) / P0 in the row's step model: one prompt beside c - 1 decodes."""
    pm = scenario_perf_model(row_scenario(row))
    users, ctx = engine_parallelism(row).concurrency, row.isl + row.osl // 2
    decode = pm.step_time_s([], [ctx] * users)
    return (pm.step_time_s([(row.isl, 0)], [ctx] * (users - 1)) - decode) / pm.step_time_s([(row.isl, 0)], [])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("rows_csv")
    ap.add_argument("--measured", default=str(DEFAULT))
    args = ap.parse_args()
    simulated = {r["id"]: float(r["simulated_tpot_ms"]) / 1e3 for r in csv.DictReader(open(args.rows_csv))}
    rows = [r for r in long_prompt_rows(read_rows(args.measured)) if r.id in simulated and inexpressible_reason(r) is None]
    groups: dict[str, list[tuple[float, float, float]]] = {}
    for r in rows:
        item = (step_price(r), prompt_cost_ratio(r, simulated[r.id]), prompt_cost_ratio(r, r.tpot_s))
        groups.setdefault(f"{r.backend} {r.system}", []).append(item)
        groups.setdefault("all", []).append(item)
    print("| group | rows | step model | simulated | measured |\n|---|---:|---:|---:|---:|")
    for name in sorted(groups, key=lambda g: (g == "all", g)):
        items = groups[name]
        med = [statistics.median(x[i] for x in items) for i in range(3)]
        print(f"| {name} | {len(items)} | {med[0]:.2f} | {med[1]:.2f} | {med[2]:.2f} |")


if __name__ == "__main__":
    main()
