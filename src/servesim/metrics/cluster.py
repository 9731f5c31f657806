"""The `cluster` section of a summary: load and service per replica and per pool (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from collections.abc import Callable, Iterable

import numpy as np

from servesim.metrics.step_log import StepLog, StepTimes
from servesim.metrics.step_reduce import StepReducer
from servesim.metrics.summary import FINISHED, RequestColumns


@dataclass(frozen=True)
class ReplicaRecord:
    """What one replica did, for summaries and reports."""

    index: int
    pool: str
    num_gpu_blocks: int
    # the whole log (`keep_steps`), or its times alone for the elastic, power and disaggregation
    # sections, or None (it was reduced as it came)
    steps: StepLog | StepTimes | None
    stats: StepReducer  # totals, sums and time-series partials of the log
    prefix_hits: tuple[int, int]  # (queried tokens, hit tokens)
    num_dispatched: int  # requests routed here (re-routes included)
    num_crashes: int
    down_s: float


def _replica_stats(rec: ReplicaRecord, num_finished: int, num_preemptions: int, span_s: float) -> dict:
    s = rec.stats
    queried, hit = rec.prefix_hits
    return {
        "pool": rec.pool,
        "num_dispatched": rec.num_dispatched,
        "num_finished": num_finished,
        "output_tokens_per_s": float(s.output_tokens / span_s),
        "busy_share": float(s.busy_s.value() / span_s),
        # time-weighted over the whole run (an idle replica holds zero); exact sums of level x duration
        "mean_running": float(s.level_s["num_running"].value() / span_s),
        "mean_waiting": float(s.level_s["num_waiting"].value() / span_s),
        "mean_kv_usage": float(s.level_s["kv_used_blocks"].value() / span_s / rec.num_gpu_blocks),
        "num_preemptions": num_preemptions,
        "prefix_cache_hit_rate": float(hit / queried) if queried else 0.0,
        "num_crashes": rec.num_crashes,
        "down_s": rec.down_s,
    }


def cluster_section(replicas: list[ReplicaRecord], info: dict,
                    chunks: Callable[[], Iterable[tuple[np.ndarray, RequestColumns]]], end_s: float) -> dict:
    """Per replica and per pool: dispatches, throughput, busy share, load, KV usage,
    preemptions, prefix hits, failures; and how unevenly the router spread the load.
    `chunks()` gives (replica of each request, its columns) a chunk of rows at a time."""
    end = end_s  # the last step's end (0 without steps)
    n = len(replicas)
    finished, preempted = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    start, num_failed = np.inf, 0
    for replica_of, cols in chunks():
        on = replica_of >= 0  # (a request that never reached a replica counts for none)
        finished += np.bincount(replica_of[on & (cols.state == FINISHED)], minlength=n)[:n]
        np.add.at(preempted, replica_of[on], cols.num_preemptions[on])
        num_failed += int((cols.state == 8).sum())
        if len(cols.arrival_s):
            start = min(start, float(cols.arrival_s.min()))
    start = 0.0 if start == np.inf else start
    span_s = max(end - start, 1e-12)
    per = [_replica_stats(rec, int(finished[rec.index]), int(preempted[rec.index]), span_s) for rec in replicas]
    load = np.array([p["mean_running"] + p["mean_waiting"] for p in per])
    sent = np.array([p["num_dispatched"] for p in per], dtype=float)
    pools: dict[str, dict] = {}
    for p in per:
        g = pools.setdefault(p["pool"], {"num_replicas": 0, "num_dispatched": 0, "num_finished": 0,
                                         "output_tokens_per_s": 0.0, "busy_share": 0.0, "num_preemptions": 0,
                                         "num_crashes": 0})
        g["num_replicas"] += 1
        for k in ("num_dispatched", "num_finished", "output_tokens_per_s", "busy_share", "num_preemptions",
                  "num_crashes"):
            g[k] += p[k]
    for g in pools.values():
        g["busy_share"] /= g["num_replicas"]  # mean over the pool's replicas
    return {
        **info,
        "num_replicas": len(replicas),
        "num_failed": num_failed,
        # max over replicas / mean over replicas: 1 = perfectly even
        "load_imbalance": float(load.max() / load.mean()) if load.mean() > 0 else 1.0,
        "dispatch_imbalance": float(sent.max() / sent.mean()) if sent.mean() > 0 else 1.0,
        "per_pool": pools,
        "per_replica": per,
    }
