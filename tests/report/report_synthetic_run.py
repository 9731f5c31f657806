"""Write a realistic synthetic run folder in exactly the core's output format.

Used by the report tests (and to make the README screenshot) so the report can be developed
and tested without running a simulation. Numbers are plausible, not simulated.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import yaml

REQUEST_COLUMNS = [
    "id", "tenant", "priority", "slo_class", "is_offline", "session_id", "program_id", "arrival_s",
    "prompt_len", "output_len", "num_output_tokens", "state", "first_scheduled_s", "first_token_s",
    "finish_s", "ttft_s", "tpot_s", "e2e_s", "num_preemptions", "num_cached_tokens",
]
TIMESERIES_COLUMNS = [
    "time_s", "interval_s", "arrivals", "finished", "prompt_tokens", "output_tokens",
    "num_running", "num_waiting", "kv_usage",
]
SLO = {"ttft_s": 0.5, "tpot_s": 0.05}


def write_run(out_dir: Path, num_requests: int = 400, seed: int = 0, slowdown: float = 1.0,
              rate_per_s: float = 4.0, with_slo: bool = True) -> Path:
    """Write scenario.yaml, summary.json, requests.csv and timeseries.csv into `out_dir`."""
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    reqs = _requests(rng, num_requests, slowdown, rate_per_s)
    _write_requests(out_dir / "requests.csv", reqs)
    duration = float(np.nanmax(reqs["finish_s"]))
    _write_timeseries(out_dir / "timeseries.csv", rng, reqs, duration)
    scenario = {
        "seed": seed, "model": "meta-llama/Llama-3.1-8B-Instruct", "gpu": "H100-80GB", "tp": 1,
        "dtype": "bf16",
        "engine": {"max_num_batched_tokens": 8192, "max_num_seqs": 256, "block_size": 16,
                   "enable_prefix_caching": True},
        "scheduler": {"name": "fcfs"},
        "workload": {"arrivals": {"kind": "poisson", "rate_per_s": rate_per_s},
                     "lengths": {"kind": "trace", "path": "azure-conv"}, "num_requests": num_requests},
        "slo": dict(SLO) if with_slo else {"ttft_s": None, "tpot_s": None},
        "future_key": {"anything": [1, 2]},
    }
    (out_dir / "scenario.yaml").write_text(yaml.safe_dump(scenario, sort_keys=False))
    summary = _summary(reqs, duration, with_slo)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return out_dir


def _requests(rng: np.random.Generator, n: int, slowdown: float, rate: float) -> dict[str, np.ndarray]:
    arrival = np.cumsum(rng.exponential(1.0 / rate, n))
    tenant = np.where(rng.random(n) < 0.6, "acme", "globex")
    slo_class = np.where(rng.random(n) < 0.7, "interactive", "batch")
    prompt = rng.integers(20, 3000, n)
    output = rng.integers(1, 600, n)
    ttft = rng.lognormal(np.log(0.15), 0.7, n) * slowdown * np.where(tenant == "globex", 1.5, 1.0)
    tpot = rng.lognormal(np.log(0.025), 0.35, n) * slowdown
    state = np.full(n, "finished", dtype=object)
    state[rng.random(n) < 0.02] = "rejected"
    state[-3:] = "running"
    finished = state == "finished"
    started = state != "rejected"
    e2e = ttft + tpot * (output - 1)
    reqs = {
        "id": np.arange(n), "tenant": tenant, "slo_class": slo_class, "arrival_s": arrival,
        "prompt_len": prompt, "output_len": output, "state": state,
        "num_output_tokens": np.where(finished, output, np.where(started, output // 2, 0)),
        "first_scheduled_s": np.where(started, arrival + ttft * 0.3, np.nan),
        "first_token_s": np.where(started, arrival + ttft, np.nan),
        "finish_s": np.where(finished, arrival + e2e, np.nan),
        "ttft_s": np.where(started, ttft, np.nan),
        "tpot_s": np.where(finished & (output > 1), tpot, np.nan),
        "e2e_s": np.where(finished, e2e, np.nan),
        "num_preemptions": (rng.random(n) < 0.05).astype(int),
        "num_cached_tokens": rng.integers(0, 16, n) * 16,
    }
    return reqs


def _cell(value: object) -> str:
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else repr(float(value))
    return str(value)


def _write_requests(path: Path, reqs: dict[str, np.ndarray]) -> None:
    n = len(reqs["id"])
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(REQUEST_COLUMNS)
        for i in range(n):
            row = {
                "priority": 0, "is_offline": "false", "session_id": "", "program_id": "",
                **{k: v[i] for k, v in reqs.items()},
            }
            writer.writerow([_cell(row[c]) for c in REQUEST_COLUMNS])


def _write_timeseries(path: Path, rng: np.random.Generator, reqs: dict[str, np.ndarray],
                      duration: float, interval: float = 1.0) -> None:
    edges = np.arange(0.0, duration + interval, interval)
    arrivals, _ = np.histogram(reqs["arrival_s"], edges)
    finish = reqs["finish_s"][np.isfinite(reqs["finish_s"])]
    finished, _ = np.histogram(finish, edges)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(TIMESERIES_COLUMNS)
        for i, start in enumerate(edges[:-1]):
            running = max(0.0, arrivals[max(0, i - 5):i + 1].sum() * 1.2 + rng.normal(0, 0.5))
            waiting = max(0.0, rng.normal(arrivals[i] * 0.3, 0.4))
            writer.writerow([
                f"{start:g}", f"{interval:g}", int(arrivals[i]), int(finished[i]),
                int(arrivals[i] * 1400), int(running * 38), f"{running:.3f}", f"{waiting:.3f}",
                f"{min(1.0, running / 40.0):.4f}",
            ])


def _stats(values: np.ndarray) -> dict[str, float]:
    values = values[np.isfinite(values)]
    return {"mean": float(values.mean()), "p50": float(np.percentile(values, 50)),
            "p90": float(np.percentile(values, 90)), "p99": float(np.percentile(values, 99)),
            "max": float(values.max())}


def _group(reqs: dict[str, np.ndarray], mask: np.ndarray, duration: float, with_slo: bool) -> dict:
    done = mask & (reqs["state"] == "finished")
    out = {"num_requests": int(mask.sum()), "ttft_s": _stats(reqs["ttft_s"][done]),
           "tpot_s": _stats(reqs["tpot_s"][done]), "e2e_s": _stats(reqs["e2e_s"][done]),
           "output_tokens_per_s": float(reqs["num_output_tokens"][done].sum() / duration)}
    if with_slo:
        out["slo_attainment"] = float(_meets(reqs, done).sum() / max(done.sum(), 1))
    return out


def _meets(reqs: dict[str, np.ndarray], done: np.ndarray) -> np.ndarray:
    tpot = np.nan_to_num(reqs["tpot_s"], nan=0.0)
    return done & (reqs["ttft_s"] <= SLO["ttft_s"]) & (tpot <= SLO["tpot_s"])


def _summary(reqs: dict[str, np.ndarray], duration: float, with_slo: bool) -> dict:
    state = reqs["state"]
    done = state == "finished"
    summary = {
        "num_requests": len(state), "num_finished": int(done.sum()),
        "num_rejected": int((state == "rejected").sum()), "num_dropped": 0,
        "simulated_time_s": duration, "wall_time_s": 0.42,
        "ttft_s": _stats(reqs["ttft_s"][done]), "tpot_s": _stats(reqs["tpot_s"][done]),
        "itl_s": _stats(reqs["tpot_s"][done] * 1.02), "e2e_s": _stats(reqs["e2e_s"][done]),
        "throughput": {
            "requests_per_s": float(done.sum() / duration),
            "input_tokens_per_s": float(reqs["prompt_len"][done].sum() / duration),
            "output_tokens_per_s": float(reqs["num_output_tokens"][done].sum() / duration),
        },
        "num_preemptions": int(reqs["num_preemptions"].sum()),
        "prefix_cache_hit_rate": 0.137,
        "fairness": {"jain_index": 0.93, "max_min_ratio": 1.8},
        "qoe": 0.88,
    }
    if with_slo:
        summary["slo_attainment"] = float(_meets(reqs, done).sum() / done.sum())
        summary["goodput_requests_per_s"] = float(_meets(reqs, done).sum() / duration)
    summary["per_tenant"] = {t: _group(reqs, reqs["tenant"] == t, duration, with_slo)
                             for t in ("acme", "globex")}
    summary["per_slo_class"] = {c: _group(reqs, reqs["slo_class"] == c, duration, with_slo)
                                for c in ("interactive", "batch")}
    return summary
