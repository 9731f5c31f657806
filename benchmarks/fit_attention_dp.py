"""Fit the attention-DP constants (`dp_step_s`, `dp_seq_s`) per engine on the silicon rows with
attention DP, and report their error before and after, with the odd file positions held out.

Run: PYTHONPATH=src python benchmarks/fit_attention_dp.py [--measured CSV] [--rows-out CSV]
Plays every expressible attention-DP row twice (constants at 0, then fitted): 5-15 minutes on two
busy cores. Prints the calibration entries for perf/data/calibration_serving.yaml and the median
errors per (engine, GPU) and on the held-out rows (validation/attention_dp.py; docs/fidelity-history.md,
"Attention data parallelism").
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

import yaml

from servesim.validation.attention_dp import dp_rows, fit_entries
from servesim.validation.run import simulate_row
from servesim.validation.silicon import read_rows
from servesim.validation.silicon_file import DEFAULT_SILICON

ZERO = {"dp_step_s": 0.0, "dp_seq_s": 0.0}


def summary(results, label: str) -> None:
    groups: dict[str, list] = {"all": results, "held out (odd)": [x for x in results if x[0] % 2]}
    for i, res in results:
        groups.setdefault(f"{res.row.backend} {res.row.system}", []).append((i, res))
    for name, items in groups.items():
        t = [res.ttft_error for _, res in items]
        p = [res.tpot_error for _, res in items]
        print(f"{label:6} {name:22} {len(items):3} rows  TTFT {statistics.median(map(abs, t)):.1%} "
              f"({statistics.median(t):+.1%})  TPOT {statistics.median(map(abs, p)):.1%} ({statistics.median(p):+.1%})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--measured", default=str(DEFAULT_SILICON))
    ap.add_argument("--rows-out", help="write per-row results (fitted constants) to this CSV")
    ap.add_argument("--before", help="CSV of (pos, simulated TPOT s) with the constants at 0: written if absent, else reused")
    args = ap.parse_args()
    rows = dp_rows(read_rows(args.measured))
    if args.before and Path(args.before).is_file():
        with open(args.before) as f:
            sim = {int(p): float(t) for p, t in csv.reader(f)}
    else:
        before = [(i, simulate_row(r, overrides=ZERO)) for i, r in rows]
        summary(before, "before")
        sim = {i: res.tpot_s for i, res in before}
        if args.before:
            with open(args.before, "w", newline="") as f:
                csv.writer(f).writerows([(i, repr(t)) for i, t in sim.items()])
    entries = fit_entries([(r, sim[i]) for i, r in rows if i % 2 == 0])
    print(yaml.safe_dump([{"match": e.match, "set": e.values} for e in entries], sort_keys=False))
    fitted = {e.match["engine"]: dict(e.values) for e in entries}
    after = [(i, simulate_row(r, overrides=fitted.get(r.backend, ZERO))) for i, r in rows]
    summary(after, "after")
    if args.rows_out:
        with open(args.rows_out, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["pos", "id", "backend", "system", "tp", "dp", "isl", "osl", "concurrency",
                        "ttft_error", "tpot_error"])
            for i, res in after:
                r = res.row
                w.writerow([i, r.id, r.backend, r.system, r.tp, r.attention_dp, r.isl, r.osl, r.concurrency,
                            f"{res.ttft_error:.4f}", f"{res.tpot_error:.4f}"])


if __name__ == "__main__":
    main()
