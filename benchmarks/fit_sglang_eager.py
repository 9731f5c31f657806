"""Refit SGLang's eager prefill time and the decode constants it interacts with, per GPU, on the
silicon rows (validation/eager.py): `eager_layer_s`, `step_overhead_s`, `seq_gpu_s` and a latency
added to the system's SGLang front-end profiles, on a spread sample of the rows at even file
positions; prints the held-out (odd positions) error before and after, and the calibration entries
(for perf/data/calibration_serving.yaml). docs/fidelity-history.md ("SGLang: eager prefill steps and the
decode floor") says which systems were shipped and why.

Run: python benchmarks/fit_sglang_eager.py [--measured CSV] [--system b200_sxm ...] [--per-group 20] [--sweeps 1]
(about 2 CPU minutes per system at 20 rows and one sweep; several times that on busy cores).
"""

from __future__ import annotations

import argparse

import yaml

from servesim.validation.eager import calibration_entries, fit_eager
from servesim.validation.silicon import read_rows
from servesim.validation.silicon_file import DEFAULT_SILICON

SYSTEMS = ("b200_sxm", "b300_sxm", "h100_sxm", "h200_sxm")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--measured", default=str(DEFAULT_SILICON))
    ap.add_argument("--system", action="append", choices=SYSTEMS, help="repeatable; default: all four")
    ap.add_argument("--per-group", type=int, default=20)
    ap.add_argument("--sweeps", type=int, default=1)
    args = ap.parse_args()
    fitted = fit_eager(read_rows(args.measured), tuple(args.system or SYSTEMS), per_group=args.per_group,
                       sweeps=args.sweeps, log=print)
    print(yaml.safe_dump({"entries": [{"match": e.match, "set": e.values} for e in calibration_entries(fitted)]}, sort_keys=False))
    for (engine, system), values in fitted.items():
        print(f"front end {engine} {system}: add {values['latency_add_s']:g} s to latency_s")


if __name__ == "__main__":
    main()
