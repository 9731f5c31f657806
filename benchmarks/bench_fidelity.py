"""Fidelity benchmark: simulate the measured serving runs of the AIConfigurator silicon sample end
to end and print the median error of TTFT and TPOT per engine and GPU (issue 14).

Run: python benchmarks/bench_fidelity.py [--measured CSV] [--sample N] [--no-frontend] [--uncalibrated] [--warmup-continuous]
Goal (issue 14, item 7): median absolute error <= 10 % for TTFT and for TPOT over the expressible
aggregated rows, with constants per GPU and engine only. Takes a few minutes on 2 cores
(`--sample 100` for a quick look); the same table is in docs/fidelity.md.
"""

from __future__ import annotations

import argparse
import time

from servesim.validation.fit import spread_sample
from servesim.validation.run import group_errors, held_out_line, markdown_table, skipped_table, validate_rows
from servesim.validation.silicon import ClientOptions, inexpressible_reason, read_rows
from servesim.validation.silicon_file import DEFAULT_SILICON, held_out_ids


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--measured", default=str(DEFAULT_SILICON))
    ap.add_argument("--sample", type=int, default=None, help="only this many expressible rows, spread through the file")
    ap.add_argument("--ramp-up-s", type=float, default=0.0)
    ap.add_argument("--no-frontend", action="store_true")
    ap.add_argument("--warmup-continuous", action="store_true", help="warm-up requests in the same closed loop (not AIPerf's phases)")
    ap.add_argument("--uncalibrated", action="store_true")
    args = ap.parse_args()
    rows = read_rows(args.measured)
    held_out = held_out_ids(rows)  # of the whole file: a sample keeps its rows' sides
    if args.sample:
        rows = spread_sample([r for r in rows if inexpressible_reason(r) is None], args.sample)
    t0 = time.perf_counter()
    results, skipped = validate_rows(rows, ClientOptions(ramp_up_s=args.ramp_up_s, frontend=not args.no_frontend,
                                                         warmup_drains=not args.warmup_continuous),
                                     calibration=None if args.uncalibrated else "shipped")
    wall = time.perf_counter() - t0
    print(markdown_table(group_errors(results)))
    print()
    print(held_out_line(results, held_out))
    print()
    print(markdown_table(group_errors(results, key=lambda r: r.model)).replace("group (engine GPU)", "model"))
    print()
    print(skipped_table(skipped))
    print(f"\n{len(results)} rows simulated in {wall:.0f} s wall ({len(results) / wall:.1f} rows/s)")


if __name__ == "__main__":
    main()
