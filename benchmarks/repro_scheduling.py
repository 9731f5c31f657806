"""Rerun the scheduling reproductions of docs/scheduling.md and refresh its result tables.

    python benchmarks/repro_scheduling.py            # writes the tables into docs/scheduling.md
    python benchmarks/repro_scheduling.py --print    # prints them instead

The setups are those of tests/reproductions/experiments.py (the tests run smaller versions).
Everything is simulated (no GPU); the whole script takes a minute or two on 2 cores.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from servesim.scenario import validate_scenario  # noqa: E402
from servesim.simulation import simulate  # noqa: E402
from tests.reproductions.experiments import (SARATHI, VLLM_V0, mooncake_prefix, online_offline,  # noqa: E402
                                             online_offline_stats, paged_vs_reservation, run, run_programs,
                                             sarathi_vs_v0, vtc_overload)

BEGIN, END = "<!-- repro:begin -->", "<!-- repro:end -->"


def table(header: list[str], rows: list[list]) -> str:
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def e1() -> str:
    rates = [0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    policies = [("vLLM v0 (prefill-first)", VLLM_V0), ("Sarathi τ=512", SARATHI),
                ("Sarathi τ=2048", {"name": "sarathi", "chunk_size": 2048}), ("vLLM v1", {"name": "vllm"})]
    rows, caps = [], []
    for label, sched in policies:
        res = [run(sarathi_vs_v0(sched, r, num_requests=400)) for r in rates]
        rows.append([label] + [s["itl_s"]["p99"] * 1000 for s in res])
        cap = []
        for slo in (0.1, 0.5):
            ok = [r for r, s in zip(rates, res) if s["itl_s"]["p99"] <= slo and s["ttft_s"]["p50"] <= 2.0]
            cap.append(max(ok, default=0.0))
        caps.append([label] + cap)
    return ("P99 time between tokens (ms) vs request rate (req/s):\n\n"
            + table(["policy"] + [f"{r:g}" for r in rates], rows)
            + "\n\nCapacity (highest rate of the grid with P99 TBT <= SLO and median TTFT <= 2 s):\n\n"
            + table(["policy", "strict SLO 100 ms", "relaxed SLO 500 ms"], caps))


def e2() -> str:
    rows = []
    for label, sched in [("VTC", {"name": "vtc"}), ("LCF (no lift)", {"name": "vtc", "variant": "lcf"}),
                         ("FCFS (same router)", {"name": "vtc", "variant": "fcfs"}), ("vLLM v1 FCFS", {"name": "vllm"})]:
        f = run(vtc_overload(sched, duration_s=360.0))["fairness"]
        t = f["tenants"]
        rows.append([label, t["light"]["service"], t["heavy"]["service"],
                     t["heavy"]["service"] / t["light"]["service"], f["max_cumulative_gap"], f["jain_index"]])
    return table(["policy", "light service", "heavy service", "heavy / light", "max accumulated gap", "Jain"], rows)


def _normalized_latency(sched: dict, rate: float) -> float:
    r = simulate(validate_scenario(paged_vs_reservation(sched, rate, num_requests=600)))
    done = [q for q in r.requests if q.state.name == "FINISHED"]
    return float(np.mean([(q.finish_s - q.arrival_s) / q.output_len for q in done]))


def e3() -> str:
    rates = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    rows = []
    for label, sched in [("vLLM (paged)", {"name": "vllm"}), ("Orca (Oracle)", {"name": "orca", "reservation": "oracle"}),
                         ("Orca (Pow2)", {"name": "orca", "reservation": "pow2"}),
                         ("Orca (Max)", {"name": "orca", "reservation": "max"})]:
        lat = [_normalized_latency(sched, r) for r in rates]
        sustained = max([r for r, v in zip(rates, lat) if v <= 0.05], default=0.0)
        rows.append([label] + [v * 1000 for v in lat] + [sustained])
    return ("Normalized latency (ms per output token) vs request rate (req/s):\n\n"
            + table(["policy"] + [f"{r:g}" for r in rates] + ["sustained at 50 ms/token"], rows))


def e4() -> str:
    rows = []
    for label, sched, caching in [
            ("vLLM FCFS, no prefix caching (the paper's baseline)", {"name": "vllm"}, False),
            ("Autellix PLAS (swap), no prefix caching", {"name": "autellix"}, False),
            ("vLLM v1 FCFS", {"name": "vllm"}, True), ("Autellix PLAS (swap)", {"name": "autellix"}, True),
            ("Autellix ATLAS (swap)", {"name": "autellix", "mode": "atlas"}, True),
            ("Autellix PLAS (recompute)", {"name": "autellix", "preemption_mode": "recompute"}, True)]:
        s = run_programs(sched, num_programs=400, enable_prefix_caching=caching)
        p = s["programs"]
        rows.append([label, p["mean_completion_s"], p["p50_completion_s"], p["p99_completion_s"], s["num_preemptions"]])
    return table(["policy", "mean program s", "p50 s", "p99 s", "preemptions"], rows)


def e5() -> str:
    rows = []
    for policy in ("fcfs", "lpm", "dfs-weight"):
        s = run(mooncake_prefix(policy, num_requests=1200))
        rows.append([policy, s["prefix_cache_hit_rate"], s["ttft_s"]["mean"], s["ttft_s"]["p99"]])
    vllm = run({**mooncake_prefix("fcfs", num_requests=1200), "scheduler": {"name": "vllm"}})
    rows.append(["(vLLM v1, APC)", vllm["prefix_cache_hit_rate"], vllm["ttft_s"]["mean"], vllm["ttft_s"]["p99"]])
    return table(["schedule_policy", "prefix hit rate", "TTFT mean s", "TTFT p99 s"], rows)


def e6() -> str:
    rows = []
    for rate in (4.0, 6.0):
        for label, sched in [("vLLM v1 (offline as online)", {"name": "vllm"}),
                             ("Sarathi τ=512 (offline as online)", SARATHI),
                             ("HyGen, budget 30 ms", {"name": "hygen", "latency_budget_s": 0.03}),
                             ("HyGen, budget 40 ms", {"name": "hygen", "latency_budget_s": 0.04})]:
            st = online_offline_stats(online_offline(sched, rate))
            rows.append([rate, label, st["online_ttft_p99_s"], st["online_tpot_p99_s"] * 1000, st["offline_tokens_per_s"]])
    return table(["req/s", "policy", "online TTFT p99 s", "online TPOT p99 ms", "offline output tok/s"], rows)


SECTIONS = [
    ("E1. Sarathi-Serve vs vLLM v0 (Mistral-7B, A100-80GB, arxiv lengths, 400 requests)", e1),
    ("E2. VTC vs FCFS under overload (Llama-2-7B, A10G, 2 tenants at 1.5 and 3 req/s, 256/256 tokens, 6 min)", e2),
    ("E3. Paged KV vs Orca reservation (OPT-13B, A100-40GB, ShareGPT, 600 requests)", e3),
    ("E4. Autellix vs FCFS on agent programs (Llama-3.1-8B, A100-80GB at 0.26 memory, 400 programs)", e4),
    ("E5. SGLang queue order on the Mooncake conversation trace (Llama-3.1-8B, TP 4 H100, 2x speed, 1,200 requests)", e5),
    ("E6. HyGen online/offline co-location (Llama-3.1-8B, A100-80GB, ShareGPT, half offline, 600 requests)", e6),
]


def main() -> None:
    parts = []
    for title, fn in SECTIONS:
        print(f"running {title} ...", file=sys.stderr)
        parts.append(f"#### {title}\n\n{fn()}\n")
    text = "\n".join(parts)
    if "--print" in sys.argv:
        print(text)
        return
    doc = ROOT / "docs" / "scheduling.md"
    old = doc.read_text()
    head, _, rest = old.partition(BEGIN)
    _, _, tail = rest.partition(END)
    doc.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")
    print(f"updated {doc}", file=sys.stderr)


if __name__ == "__main__":
    main()
