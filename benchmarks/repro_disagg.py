"""The Mooncake, Splitwise and KV-store reproductions of docs/disaggregation.md, as tables.

Run: python benchmarks/repro_disagg.py [--end-s 300]
Same setups as tests/cluster/test_mooncake.py, test_splitwise.py and test_kv_store.py
(examples/mooncake-pd.yaml and examples/splitwise-pd.yaml with overrides).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from servesim import load_scenario, simulate
from servesim.metrics.disaggregation import late_prefill_tokens

ROOT = Path(__file__).resolve().parents[1]
PRICE_USD_H = {"h100-sxm": 2.49, "a100-80gb": 1.79}  # the GPU catalogue's dated prices


def run(example: str, sets: list[str]):
    return simulate(load_scenario(ROOT / "examples" / example, sets))


def mooncake(end_s: float) -> None:
    print("Mooncake conversation trace, Llama-3.1-8B: prefill selection")
    print("| setup | arm | TTFT mean s | TTFT p90 s | prefix hit rate |")
    h100 = ["gpu=h100-sxm", "perf.kv_cache_dtype=auto",
            "pools=[{name: prefill, role: prefill, replicas: 2}, {name: decode, role: decode, replicas: 3}]"]
    for setup, extra in (("4P + 1D H200, FP8 KV", []), ("2P + 3D H100, BF16 KV", h100),
                         ("2P + 3D H100, BF16 KV, KV store", [*h100, "kv_store.enabled=true"])):
        for arm, sets in (("cache-aware", ["router.name=mooncake"]),
                          ("load-only", ["router.name=mooncake", "router.cache_aware=false"]),
                          ("random", ["router.name=random"])):
            s = run("mooncake-pd.yaml", [f"workload.trace.end_s={end_s}", *extra, *sets]).summary()
            print(f"| {setup} | {arm} | {s['ttft_s']['mean']:.2f} | {s['ttft_s']['p90']:.2f} | "
                  f"{s['prefix_cache_hit_rate']:.3f} |")
    print("\nMooncake trace at 2x speed: overload admission (TTFT SLO 10 s, TBT SLO 20 ms)")
    print("| rejection | rejected at arrival | rejected after prefill | wasted prefill tokens | goodput req/s |")
    for policy in ("off", "decode", "early", "predictive"):
        res = run("mooncake-pd.yaml", [f"workload.trace.end_s={end_s}", "workload.trace.speedup=2",
                                       f"disaggregation.rejection={policy}"])
        s = res.summary()
        rej = s["disaggregation"].get("rejection", {"rejected_at_arrival": 0, "rejected_at_decode": 0,
                                                    "rejected_after_prefill_tokens": 0})
        wasted = rej["rejected_after_prefill_tokens"] + late_prefill_tokens(res.requests, 10.0, 0.02)
        print(f"| {policy} | {rej['rejected_at_arrival']} | {rej['rejected_at_decode']} | {wasted:,} | "
              f"{s['goodput_requests_per_s']:.2f} |")


def splitwise() -> None:
    print("\nSplitwise: Azure conversation trace at 6x, Llama-3.1-70B TP 4 (4 replicas = 16 GPUs)")
    print("| pools | $/h | SLO attainment | goodput req/s | goodput per $/h | TTFT p90 s | TPOT p90 ms | overflow |")
    arms = [("2P + 1D + 1 mixed (overflow)", "[{name: p, role: prefill, replicas: 2}, {name: d, role: decode}, "
             "{name: m}]", [], ["h100-sxm"] * 4),
            ("2P + 1D + 1 mixed (router)", "[{name: p, role: prefill, replicas: 2}, {name: d, role: decode}, "
             "{name: m}]", ["disaggregation.overflow=off"], ["h100-sxm"] * 4),
            ("3P + 1D", "[{name: p, role: prefill, replicas: 3}, {name: d, role: decode}]", [], ["h100-sxm"] * 4),
            ("2P + 2D", "[{name: p, role: prefill, replicas: 2}, {name: d, role: decode, replicas: 2}]", [],
             ["h100-sxm"] * 4),
            ("2P H100 + 2D A100", "[{name: p, role: prefill, replicas: 2}, {name: d, role: decode, replicas: 2, "
             "gpu: a100-80gb}]", [], ["h100-sxm"] * 2 + ["a100-80gb"] * 2),
            ("2P H100 + 3D A100", "[{name: p, role: prefill, replicas: 2}, {name: d, role: decode, replicas: 3, "
             "gpu: a100-80gb}]", [], ["h100-sxm"] * 2 + ["a100-80gb"] * 3),
            ("4 mixed", "[{name: m, replicas: 4}]", [], ["h100-sxm"] * 4)]
    for speedup in (4, 6):
        for name, pools, extra, gpus in arms:
            s = run("splitwise-pd.yaml", [f"pools={pools}", f"workload.trace.speedup={speedup}", *extra]).summary()
            cost = sum(PRICE_USD_H[g] * 4 for g in gpus)
            gp = s["goodput_requests_per_s"]
            over = s.get("disaggregation", {}).get("num_overflow", "")
            print(f"| {name} (x{speedup}) | {cost:.2f} | {s['slo_attainment']:.3f} | {gp:.2f} | {gp / cost:.3f} | "
                  f"{s['ttft_s']['p90']:.2f} | {s['tpot_s']['p90'] * 1e3:.1f} | {over} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--end-s", type=float, default=300.0, help="trace seconds replayed (Mooncake)")
    args = ap.parse_args()
    mooncake(args.end_s)
    splitwise()


if __name__ == "__main__":
    main()
