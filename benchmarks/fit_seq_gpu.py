"""Fit the GPU time per sequence (`seq_gpu_s`) per (GPU, engine) on the silicon rows with more
than 8 users (validation/batch.py) and print the calibration entries.

Run: python benchmarks/fit_seq_gpu.py [--measured CSV] [--engine vllm ...]
Fits on even file positions (16 rows per group, 7 grid values); docs/fidelity.md ("Decode at
large batches") reports the held-out error. About 5-10 minutes on two busy cores.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from servesim.validation.batch import fit_seq_gpu
from servesim.validation.silicon import read_rows

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / ".." / "shared" / "data" / "perf" / "aiconfigurator_silicon" / "silicon_calibration.csv"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--measured", default=str(DEFAULT))
    ap.add_argument("--engine", action="append", choices=("vllm", "sglang", "trtllm"), help="repeatable; default: all three")
    args = ap.parse_args()
    entries = fit_seq_gpu(read_rows(args.measured), tuple(args.engine or ("vllm", "sglang", "trtllm")), log=print)
    print(yaml.safe_dump({"entries": [{"match": e.match, "set": e.values} for e in entries]}, sort_keys=False))


if __name__ == "__main__":
    main()
