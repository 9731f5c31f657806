"""The disaggregated rows of the AIConfigurator silicon sample, simulated end to end.

Run: python benchmarks/bench_silicon_disagg.py [--csv PATH] [--limit N] [--mtp K] [--mtp-acceptance A]
Prints how many rows the performance model cannot express yet and why, then for every other
row the simulated and measured mean TTFT and TPOT, and the mean absolute percentage error per
(model, system, engine), without MTP and with K MTP draft tokens (DeepSeek models; the rows do
not say whether MTP ran). The row -> scenario mapping is `servesim.validation.silicon_disagg`.
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict

from servesim.validation.silicon_disagg import load_disagg_rows, map_row, simulate_row
from servesim.validation.silicon_file import DEFAULT_SILICON


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", default=str(DEFAULT_SILICON))
    ap.add_argument("--limit", type=int, default=0, help="simulate at most this many rows (0: all)")
    ap.add_argument("--mtp", type=int, default=1, help="MTP draft tokens of the second pass (0: one pass only)")
    ap.add_argument("--mtp-acceptance", type=float, default=0.85, help="MTP acceptance rate per draft token")
    args = ap.parse_args()
    rows = load_disagg_rows(args.csv)
    maps = [map_row(r) for r in rows]
    print(f"{len(rows)} disaggregated rows; not expressible yet:")
    for reason, n in Counter(m.reason for m in maps if m.reason).most_common():
        print(f"  {n:4d}  {reason}")
    todo = [r for r, m in zip(rows, maps) if m.overrides][: args.limit or None]
    for mtp in sorted({0, args.mtp}):
        print(f"--- MTP draft tokens: {mtp}" + (f" (acceptance {args.mtp_acceptance})" if mtp else ""))
        errors: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
        for row in todo:
            m = map_row(row, mtp_tokens=mtp, mtp_acceptance_rate=args.mtp_acceptance)
            ttft, tpot = simulate_row(m)
            t_ms, p_ms = float(row["silicon_ttft_ms"]), float(row["silicon_tpot_ms"])
            errors[(row["model_path"], row["system"], row["backend"])].append((ttft / t_ms - 1, tpot / p_ms - 1))
            print(f"{m.row_id}: TTFT {ttft:.0f} vs {t_ms:.0f} ms, TPOT {tpot:.2f} vs {p_ms:.2f} ms")
        print("mean absolute error per (model, system, engine): rows, TTFT, TPOT")
        for key, errs in sorted(errors.items()):
            n = len(errs)
            print(f"  {key}: {n}, {sum(abs(a) for a, _ in errs) / n:.0%}, {sum(abs(b) for _, b in errs) / n:.0%}")


if __name__ == "__main__":
    main()
