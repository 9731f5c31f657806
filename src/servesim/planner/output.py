"""What a plan writes: plan.csv (+ plan.parquet), report.html, best.yaml, deploy.md, mix.yaml.

Every file is written to a temporary name and renamed into place, so an interrupted plan never
leaves a half-written file; the probe cache beside them is what makes a re-run resume.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any

import yaml

from servesim.planner.mapping import CLUSTER_KEYS, candidate_scenario
from servesim.planner.search import Evaluated, SearchResult

COLUMNS = ("rank", "candidate", "status", "gpu", "tp", "pp", "expert_parallel", "dtype", "mode", "max_num_seqs",
           "max_num_batched_tokens", "enable_chunked_prefill", "scheduler", "router", "price_usd_h",
           "static_capacity_per_s", "static_ttft_s", "static_tpot_s", "kv_capacity_tokens", "goodput_per_s",
           "bisection_step_per_s", "probes", "replicas", "gpus", "capacity_per_s", "goodput_per_gpu",
           "goodput_per_dollar", "cost_usd_h", "slo_attainment", "ttft_p90_s", "tpot_p90_s")


def row(rank: int | None, e: Evaluated) -> dict[str, Any]:
    c, st, g, at = e.cand, e.static, e.goodput, e.at_goodput or {}
    simulated = g is not None and not g.pruned
    return {
        "rank": rank, "candidate": c.label, "status": e.status, "gpu": c.gpu, "tp": c.tp, "pp": c.pp,
        "expert_parallel": c.expert_parallel, "dtype": c.dtype, "mode": c.mode, "max_num_seqs": c.max_num_seqs,
        "max_num_batched_tokens": c.max_num_batched_tokens, "enable_chunked_prefill": c.enable_chunked_prefill,
        "scheduler": c.scheduler, "router": c.router, "price_usd_h": c.price_usd_h,
        "static_capacity_per_s": st.capacity_per_s, "static_ttft_s": st.ttft_s or None,
        "static_tpot_s": st.tpot_s or None, "kv_capacity_tokens": st.kv_capacity_tokens,
        "goodput_per_s": g.goodput_per_s if simulated else None,
        "bisection_step_per_s": g.step_per_s if simulated else None,
        "probes": len(g.probes) if g else 0,
        "replicas": e.replicas if simulated else None, "gpus": e.gpus if simulated else None,
        "capacity_per_s": e.capacity_per_s if simulated else None,
        "goodput_per_gpu": e.per_gpu if simulated else None,
        "goodput_per_dollar": e.per_dollar if simulated else None,
        "cost_usd_h": e.cost_usd_h if simulated else None,
        "slo_attainment": at.get("slo_attainment"), "ttft_p90_s": at.get("ttft_p90_s"),
        "tpot_p90_s": at.get("tpot_p90_s"),
    }


def rows(result: SearchResult) -> list[dict[str, Any]]:
    out, rank = [], 0
    for e in result.ranked:
        ranked = e.status == "ok"
        rank += ranked
        out.append(row(rank if ranked else None, e))
    return out


def _atomic(path: Path, data: str | bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def _cell(v: Any) -> Any:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return repr(v) if isinstance(v, float) else v


def write_table(out_dir: Path, table: list[dict[str, Any]]) -> list[str]:
    """plan.csv always; plan.parquet when pyarrow is installed. Returns the names written."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    w.writerows([[_cell(r[k]) for k in COLUMNS] for r in table])
    _atomic(out_dir / "plan.csv", buf.getvalue())
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return ["plan.csv"]
    tmp = out_dir / ".plan.parquet.tmp"
    pq.write_table(pa.Table.from_pylist([{k: r[k] for k in COLUMNS} for r in table]), tmp)
    os.replace(tmp, out_dir / "plan.parquet")
    return ["plan.csv", "plan.parquet"]


def best_scenario(result: SearchResult, best: Evaluated) -> dict[str, Any]:
    """The winner as a ready-to-run scenario at the traffic's rate (its capacity when no traffic was given)."""
    rate = result.traffic_per_s or best.capacity_per_s
    scenario = candidate_scenario(result.base, best.cand, rate, result.shape.knob, best.replicas)
    if not CLUSTER_KEYS:  # one replica's share of the traffic until the cluster keys exist
        scenario["replicas_planned"] = best.replicas
    return scenario


def write_best(out_dir: Path, result: SearchResult, best: Evaluated) -> None:
    scenario = best_scenario(result, best)
    note = "" if CLUSTER_KEYS else (f"# One of {scenario.pop('replicas_planned')} replicas at its share of the "
                                    "traffic (run it as is with servesim run).\n")
    head = (f"# servesim plan: the best candidate, {best.cand.label}\n{note}"
            "# workload.num_requests is the planner's probe size; raise or remove it for a longer run.\n")
    _atomic(out_dir / "best.yaml", head + yaml.safe_dump(scenario, sort_keys=False))


def hf_name(model: str) -> str:
    """The Hugging Face id among the model's catalogue aliases (the name itself if none)."""
    from servesim.perf._catalog import catalogue

    for name, entry in catalogue("models.yaml").items():
        aliases = [str(a) for a in entry.get("aliases", [])]
        if model.lower() in [name, *aliases]:
            return next((a for a in aliases if "/" in a), name)
    return model


def deploy_sketch(result: SearchResult, best: Evaluated) -> str:
    """Engine flags for vLLM and SGLang, and the replica count, for the top pick."""
    c = best.cand
    model = hf_name(str(result.base.get("model", "llama-3.1-8b")))
    vllm = [f"vllm serve {model}", f"--tensor-parallel-size {c.tp}"]
    sglang = [f"python -m sglang.launch_server --model-path {model}", f"--tp {c.tp}"]
    if c.pp > 1:
        vllm.append(f"--pipeline-parallel-size {c.pp}")
        sglang.append(f"--pp-size {c.pp}")
    if c.expert_parallel:
        vllm.append("--enable-expert-parallel")
        sglang.append(f"--ep-size {c.tp}")
    if c.dtype in ("fp8",):
        vllm.append("--quantization fp8")
        sglang.append("--quantization fp8")
    if c.max_num_seqs:
        vllm.append(f"--max-num-seqs {c.max_num_seqs}")
        sglang.append(f"--max-running-requests {c.max_num_seqs}")
    if c.max_num_batched_tokens:
        vllm.append(f"--max-num-batched-tokens {c.max_num_batched_tokens}")
        sglang.append(f"--chunked-prefill-size {c.max_num_batched_tokens}")
    vllm.append("--enable-chunked-prefill" if c.enable_chunked_prefill else "--no-enable-chunked-prefill")
    if not c.enable_chunked_prefill:
        sglang.append("--chunked-prefill-size -1")
    lines = [f"# Deployment sketch: {c.label}", "",
             f"{best.replicas} replica(s) of {c.gpus_per_replica} x {c.gpu} ({best.gpus} GPUs"
             + (f", ${best.cost_usd_h:,.2f}/h" if best.cost_usd_h else "") + f"), behind a {c.router} router; "
             f"planned goodput {best.capacity_per_s:.2f} req/s.", "",
             "vLLM, per replica:", "", "```", " \\\n  ".join(vllm), "```", "",
             "SGLang, per replica:", "", "```", " \\\n  ".join(sglang), "```", ""]
    return "\n".join(lines)


def write_outputs(out_dir: Path, result: SearchResult, mix=None) -> list[str]:
    """Everything a plan writes; returns the file names."""
    from servesim.planner.report import write_report

    out_dir.mkdir(parents=True, exist_ok=True)
    table = rows(result)
    written = write_table(out_dir, table)
    best = result.best
    if best is not None:
        write_best(out_dir, result, best)
        _atomic(out_dir / "deploy.md", deploy_sketch(result, best))
        written += ["best.yaml", "deploy.md"]
    if mix is not None:
        _atomic(out_dir / "mix.yaml", yaml.safe_dump(mix_dict(mix), sort_keys=False))
        written.append("mix.yaml")
    _atomic(out_dir / "report.html", write_report(result, table, mix))
    written.append("report.html")
    return written


def mix_dict(mix) -> dict[str, Any]:
    return {"counts": mix.counts, "cost_usd_h": mix.cost_usd_h,
            "best_single": None if mix.best_single is None else
            {"candidate": mix.best_single[0], "replicas": mix.best_single[1], "cost_usd_h": float(mix.best_single[2])},
            "served_per_s": mix.assignment, "verified_slo_attainment": mix.verified,
            "capacity_per_s": {b: {t: float(mix.capacity_per_s[i, j]) for j, t in enumerate(mix.types)}
                               for i, b in enumerate(mix.buckets)}}
