"""Refit serving constants per (GPU, engine) on the silicon rows and print calibration entries
(for perf/data/calibration_serving.yaml), each fit on even file positions with the odd ones held out.

Run: python benchmarks/fit_silicon.py prefill|seq-gpu|mixed|waves|release [--measured CSV] [--engine vllm --engine sglang ...]
- prefill: prefill constants on the rows with at most 8 users (validation/prefill.py), plus the
  latency to add to each group's front-end profiles (fitted outside silicon_file.held_out_ids, the
  held-out split by measurement); 5-10 minutes per engine on two busy cores.
- seq-gpu: the GPU time per sequence (`seq_gpu_s`) on the rows with more than 8 users
  (validation/batch.py); about 3-10 minutes.
- mixed [--key ENGINE:SYSTEM ...]: the mixed prefill + decode step's slowdown (`mixed_prefill_slowdown`)
  with `seq_gpu_s` on the rows with more than 8 users (validation/mixed.py); 3-6 minutes per group.
- waves: the same prefill constants per engine release (per GPU for the rows no release covers)
  on rows of every concurrency (validation/waves.py; default engine trtllm); 20-40 minutes on busy cores.
- release --key ENGINE:SYSTEM:VERSION (repeatable) [--name CONSTANT ...]: the front end (per-token
  cost included) and the prefill constants of one release together, on its rows of every
  concurrency (validation/release_waves.py); about 5 CPU minutes per key for all six constants.
docs/fidelity-history.md ("Prefill at low concurrency", "Decode at large batches", "TensorRT-LLM TTFT by
release") says which groups were shipped and why.
"""

from __future__ import annotations

import argparse

import yaml

from servesim.validation.batch import fit_seq_gpu
from servesim.validation.mixed import fit_mixed
from servesim.validation import release_waves, waves
from servesim.validation.prefill import calibration_entries, fit_prefill
from servesim.validation.silicon import read_rows
from servesim.validation.silicon_file import DEFAULT_SILICON


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=("prefill", "seq-gpu", "mixed", "waves", "release"))
    ap.add_argument("--key", action="append", default=[], help="release: ENGINE:SYSTEM:VERSION; mixed: ENGINE:SYSTEM (repeatable)")
    ap.add_argument("--name", action="append", help="release: only these constants move (repeatable; default all)")
    ap.add_argument("--measured", default=str(DEFAULT_SILICON))
    ap.add_argument("--engine", action="append", choices=("vllm", "sglang", "trtllm"), help="repeatable; default: all three (waves: trtllm)")
    args = ap.parse_args()
    rows = read_rows(args.measured)
    engines = tuple(args.engine or (("trtllm",) if args.what == "waves" else ("vllm", "sglang", "trtllm")))
    if args.what == "release":
        profiles = {}
        entries = []
        for text in args.key:
            key = tuple(text.split(":", 2))
            entry, profile, frontend = release_waves.shipped_form(key, release_waves.fit_release(
                rows, key, names=tuple(args.name or release_waves.FRONTEND_NAMES + release_waves.PERF_NAMES), log=print))
            entries.append(entry)
            profiles[profile] = frontend
        print(yaml.safe_dump(profiles, sort_keys=False))
    elif args.what == "waves":
        fitted_waves = waves.fit_waves(rows, engines, log=print)
        entries = calibration_entries(fitted_waves)
        for profile, added_s in waves.frontend_additions(fitted_waves).items():
            print(f"front end {profile}: add {added_s:g} s to latency_s")
    elif args.what == "seq-gpu":
        entries = fit_seq_gpu(rows, engines, log=print)
    elif args.what == "mixed":
        groups = tuple(tuple(k.split(":", 1)) for k in args.key) or None
        entries = fit_mixed(rows, engines, groups=groups, log=print)  # type: ignore[arg-type]
    else:
        fitted = fit_prefill(rows, engines, log=print)
        entries = calibration_entries(fitted)
    print(yaml.safe_dump({"entries": [{"match": e.match, "set": e.values} for e in entries]}, sort_keys=False))
    if args.what == "prefill":
        for (engine, system), values in fitted.items():
            print(f"front end {engine} {system}: add {values['latency_add_s']:g} s to latency_s")


if __name__ == "__main__":
    main()
