"""The `elastic` summary section and time-series columns: replicas over time, GPU-hours,
energy, cost and the autoscaler's decisions (pure)."""

from __future__ import annotations

import numpy as np

from servesim.cluster.power import cost_usd, gpu_power_w, replica_energy_j, step_power_w, up_intervals
from servesim.metrics.summary import FINISHED, RequestColumns
from servesim.sums import left_sum


def run_end_s(records, cols: RequestColumns) -> float:
    ends = [float(r.steps.end_s[-1]) for r in records if len(r.steps)]
    fin = cols.finish_s[np.isfinite(cols.finish_s)]
    return max(ends + ([float(fin.max())] if len(fin) else []) + [0.0])


def elastic_section(records, info: dict, cols: RequestColumns, events, slo) -> dict:
    """GPU-hours, energy (per request and per output token), cost ($ per million output
    tokens, $ per request meeting its SLO), scale events and cold starts."""
    end = run_end_s(records, cols)
    gpu_h = energy_j = cost = ready_s = 0.0
    for rec, rep in zip(records, info["replicas"]):
        up_s = left_sum(b - a for a, b in up_intervals(rep["lifecycle"], end))
        gpu_h += up_s * rep["num_gpus"] / 3600
        energy_j += replica_energy_j(rec.steps, up_s, gpu_power_w(rep["gpu"]), rep["num_gpus"], rep["clock_log"],
                                     info["gamma"])
        cost += cost_usd(up_s * rep["num_gpus"] / 3600, rep["price_usd_h"])
        ready_s += up_s
    done = cols.state == FINISHED
    out_tokens = int(cols.num_output_tokens.sum())
    ok = done.copy()
    if slo.ttft_s is not None:
        ok &= (cols.first_token_s - cols.arrival_s) <= slo.ttft_s
    if slo.tpot_s is not None:
        tpot = (cols.finish_s - cols.first_token_s) / np.maximum(cols.num_output_tokens - 1, 1)
        ok &= (cols.num_output_tokens <= 1) | (tpot <= slo.tpot_s)
    n_ok = int(ok.sum())
    starts = info["cold_starts_s"]
    events = events or []
    extra = {k: info[k] for k in ("num_throttle_events", "max_row_power_w") if k in info}
    return {
        "autoscaler": info["autoscaler"],
        "gpu_hours": gpu_h,
        "mean_replicas_up": ready_s / end if end > 0 else 0.0,
        "energy_kwh": energy_j / 3.6e6,
        "mean_power_w": energy_j / end if end > 0 else 0.0,
        "energy_per_request_j": energy_j / int(done.sum()) if done.any() else None,
        "energy_per_output_token_j": energy_j / out_tokens if out_tokens else None,
        "cost_usd": cost,
        "usd_per_million_output_tokens": cost / out_tokens * 1e6 if out_tokens else None,
        "usd_per_slo_request": cost / n_ok if n_ok else None,
        "num_slo_requests": n_ok,
        "num_decisions": len(events),
        "num_scale_ups": sum(e.action == "up" for e in events),
        "num_scale_downs": sum(e.action == "down" for e in events),
        "num_cold_starts": len(starts),
        "cold_start_s": float(np.mean(starts)) if starts else 0.0,
        "cold_start_total_s": float(np.sum(starts)),
        **extra,
    }


def elastic_timeseries(records, info: dict, time_s: np.ndarray, interval_s: np.ndarray,
                       end_s: float, next_s: float | None = None) -> dict[str, np.ndarray]:
    """Per interval: replicas up (time-weighted), power draw (W, all GPUs) and cost ($), up to
    the end of the run (as the summary counts them). Given a block of the series' rows, `next_s`
    is the start of the row after it (None: the block ends the series)."""
    last = next_s is None
    edges = (np.append(time_s, time_s[-1] + interval_s[-1] if last else next_s) if len(time_s)
             else np.zeros(1))
    up = np.zeros(len(time_s))
    energy = np.zeros(len(time_s))
    cost = np.zeros(len(time_s))
    for rec, rep in zip(records, info["replicas"]):
        power = gpu_power_w(rep["gpu"])
        g = rep["num_gpus"]
        for a, b in up_intervals(rep["lifecycle"], end_s):
            share = np.clip(np.minimum(edges[1:], b) - np.maximum(edges[:-1], a), 0.0, None)
            up += share
            energy += share * power[0] * g
            cost += share * g / 3600 * rep["price_usd_h"]
        s = rec.steps
        if len(s):
            idx = np.searchsorted(edges, s.start_s, side="right") - 1
            if last:  # (steps starting after the series count in its last row)
                idx = np.minimum(idx, len(time_s) - 1)
            mine = (idx >= 0) & (idx < len(time_s))  # the steps that start in this block's rows
            excess = (step_power_w(s, power, rep["clock_log"], info["gamma"]) - power[0]) * (s.end_s - s.start_s) * g
            energy += np.bincount(idx[mine], weights=excess[mine], minlength=len(time_s))[:len(time_s)]
    return {"num_replicas": up / interval_s, "power_w": energy / interval_s, "cost_usd": cost}


def elastic_info(scenario, pools, replicas, controllers: list, power) -> dict:
    """What the `elastic` summary section needs beyond the replica records: each replica's
    lifecycle, GPUs, power constants, clock changes and price, and the cold starts paid."""
    by_name = {p.name: p for p in pools}
    prices = [c.price_usd_h for c in (scenario.autoscaler, scenario.power) if c and c.price_usd_h is not None]
    price = prices[0] if prices else None
    per = []
    for r in replicas:
        gpu = by_name[r.pool].perf.gpu_spec
        per.append({"lifecycle": list(r.lifecycle), "num_gpus": by_name[r.pool].tp, "gpu": gpu,
                    "price_usd_h": gpu.price_usd_h if price is None else price,
                    "clock_log": power.clock_logs[r.index] if power else []})
    info = {"replicas": per, "cold_starts_s": [t for c in controllers for t in c.cold_starts_s],
            "autoscaler": scenario.autoscaler.name if controllers else None,
            "gamma": scenario.power.frequency_exponent if power else 2.5}
    if power is not None and scenario.power.row_power_budget_w is not None:
        info["num_throttle_events"] = power.num_throttle_events
        info["max_row_power_w"] = max((w for _, w in power.row_w), default=0.0)
    return info
