"""Refit the prefill constants per (GPU, engine) on the low-concurrency silicon rows
(validation/prefill.py) and print them with each group's held-out error.

Run: python benchmarks/fit_prefill.py [--measured CSV] [--engine vllm --engine sglang ...]
Fits on the rows with at most 8 users at even file positions, reports the odd ones (held out).
About 5-10 minutes per engine on two busy cores. Prints calibration entries (for
perf/data/calibration_serving.yaml) and the latency to add to each group's front-end profiles;
docs/fidelity.md ("Prefill at low concurrency") says which groups were shipped and why.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from servesim.validation.prefill import calibration_entries, fit_prefill
from servesim.validation.silicon import read_rows

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / ".." / "shared" / "data" / "perf" / "aiconfigurator_silicon" / "silicon_calibration.csv"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--measured", default=str(DEFAULT))
    ap.add_argument("--engine", action="append", choices=("vllm", "sglang", "trtllm"), help="repeatable; default: all three")
    args = ap.parse_args()
    fitted = fit_prefill(read_rows(args.measured), tuple(args.engine or ("vllm", "sglang", "trtllm")), log=print)
    entries = [{"match": e.match, "set": e.values} for e in calibration_entries(fitted)]
    print(yaml.safe_dump({"entries": entries}, sort_keys=False))
    for (engine, system), values in fitted.items():
        print(f"front end {engine} {system}: add {values['latency_add_s']:g} s to latency_s")


if __name__ == "__main__":
    main()
