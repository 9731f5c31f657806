"""The planner's pick vs the static method (AIConfigurator-style) for Llama-3.1-70B.

For each (trace, SLO) the planner searches NVIDIA GPUs x TP x max_num_seqs for the cheapest
deployment of 10 req/s (max_num_batched_tokens: vLLM's default or 2048); the static pass (step latencies, TTFT x 1.8, no queueing) makes its own
pick, which is then simulated as it would be deployed. Prints the markdown table of
docs/planner.md. Run: python benchmarks/compare_static.py [--jobs 2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import yaml

from servesim.planner import plan

SETTINGS = [  # (trace, TTFT SLO s, TPOT SLO s)
    ("azure-conv", 1.0, 0.05),
    ("azure-conv", 0.5, 0.05),
    ("azure-conv", 2.0, 0.035),
    ("azure-code", 1.0, 0.05),
    ("azure-code", 2.0, 0.035),
]


def plan_dict(trace: str, ttft_s: float, tpot_s: float) -> dict:
    return {"scenario": {"model": "llama-3.1-70b", "workload": {"trace": trace}},
            "slo": {"ttft_s": ttft_s, "tpot_s": tpot_s}, "traffic": {"rate_per_s": 10.0},
            "space": {"gpu": ["h100-sxm", "h200", "a100-80gb"], "tp": [2, 4, 8], "max_num_seqs": [64, 256],
                      "max_num_batched_tokens": [None, 2048]}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    print("| trace | SLO TTFT / TPOT | planner pick | $/h | static pick | static $/h | static pick simulated: attainment | static predicted vs simulated goodput per replica |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for trace, ttft, tpot in SETTINGS:
            path = Path(tmp) / "plan.yaml"
            path.write_text(yaml.safe_dump(plan_dict(trace, ttft, tpot)))
            r = plan(path, Path(tmp) / "out", jobs=args.jobs, use_cache=False).search
            best, sp, check = r.best, r.static_pick, r.static_pick_check
            sim = next((e for e in r.ranked if sp and e.cand == sp.cand and e.goodput and not e.goodput.pruned), None)
            pred = f"{sp.static.capacity_per_s:.2f} vs {sim.goodput.goodput_per_s:.2f}" if sim else \
                (f"{sp.static.capacity_per_s:.2f} vs (not simulated)" if sp else "-")
            print(f"| {trace} | {ttft:g} s / {1e3 * tpot:g} ms "
                  f"| {best.replicas} x {best.cand.label if best else 'none'} | {best.cost_usd_h:.2f} "
                  f"| {f'{sp.replicas} x {sp.cand.label}' if sp else 'none'} | {sp.cost_usd_h:.2f} "
                  f"| {check['slo_attainment']:.1%} | {pred} |")


if __name__ == "__main__":
    main()
