"""The `disaggregation` section of a summary: KV transfers, links, TTFT split, phase utilisation (pure)."""

from __future__ import annotations

import numpy as np

from servesim.workload.request import RequestState


def _stats(x: np.ndarray) -> dict:
    if not len(x):
        return {"mean": 0.0, "p50": 0.0, "p99": 0.0, "max": 0.0}
    p50, p99 = np.percentile(x, (50, 99))
    return {"mean": float(x.mean()), "p50": float(p50), "p99": float(p99), "max": float(x.max())}


def disaggregation_section(transfers: list, links: list, roles: list[str], busy_shares: list[float],
                           num_local_prefills: int, first_token: str, span_s: float) -> dict:
    """Transfers that completed: bytes, time waiting for the receiver's blocks, time on the
    wire (link sharing included); per link kind: bytes and utilisation; the TTFT of handed-off
    requests split into queue (arrival to first schedule), prefill (to the prompt's end) and,
    when the decode side emits the first token, reservation wait and transfer; the mean busy
    share of the replicas of each role."""
    done = [x for x in transfers if x.end_s >= 0]
    wait = np.array([x.start_s - x.prefill_end_s for x in done])
    wire = np.array([x.end_s - x.start_s for x in done])
    queue = np.array([x.req.first_scheduled_s - x.req.arrival_s for x in done])
    prefill = np.array([x.prefill_end_s - x.req.first_scheduled_s for x in done])
    per_kind: dict[str, dict] = {}
    for link in links:
        kind = link.name.split("-", 1)[1]
        k = per_kind.setdefault(kind, {"num_links": 0, "bytes": 0.0, "busy_s": 0.0, "capacity_bytes": 0.0,
                                       "max_concurrent": 0})
        k["num_links"] += 1
        k["bytes"] += link.bytes_sent
        k["busy_s"] += link.busy_s
        k["capacity_bytes"] += link.bandwidth_Bps * span_s
        k["max_concurrent"] = max(k["max_concurrent"], link.max_flows)
    links_out = {kind: {"num_links": k["num_links"], "bytes": k["bytes"],
                        "busy_share": k["busy_s"] / (k["num_links"] * span_s) if span_s > 0 else 0.0,
                        "utilization": k["bytes"] / k["capacity_bytes"] if k["capacity_bytes"] else 0.0,
                        "max_concurrent_transfers": k["max_concurrent"]} for kind, k in sorted(per_kind.items())}
    split = {"queue_s": float(queue.mean()) if len(done) else 0.0,
             "prefill_s": float(prefill.mean()) if len(done) else 0.0}
    if first_token == "decode":
        split["transfer_wait_s"] = float(wait.mean()) if len(done) else 0.0
        split["transfer_s"] = float(wire.mean()) if len(done) else 0.0
    by_role: dict[str, list[float]] = {}
    for role, share in zip(roles, busy_shares):
        by_role.setdefault(role, []).append(share)
    return {
        "first_token": first_token,
        "num_transfers": len(done),
        "num_local_prefills": num_local_prefills,
        "kv_bytes": int(sum(x.num_bytes for x in done)),
        "mean_kv_bytes_per_transfer": float(np.mean([x.num_bytes for x in done])) if done else 0.0,
        "transfer_wait_s": _stats(wait),  # prefill end -> blocks reserved at the receiver
        "transfer_time_s": _stats(wire),  # reserved -> KV usable (link sharing, latency, messages)
        "links": links_out,
        "ttft_split_mean_s": split,
        "busy_share_by_role": {r: float(np.mean(v)) for r, v in sorted(by_role.items())},
    }


def late_prefill_tokens(cols: dict[str, np.ndarray], ttft_slo_s: float, tpot_slo_s: float) -> int:
    """Prompt tokens computed (prefix-cache hits excluded) for requests that finished beyond
    `ttft_slo_s` or `tpot_slo_s`: prefill work that bought no goodput. `cols`: the run's
    request table columns."""
    first, finish, arrival = cols["first_token_s"], cols["finish_s"], cols["arrival_s"]
    out_len = cols["output_len"]
    done = (cols["state"] == RequestState.FINISHED) & ~np.isnan(first) & ~np.isnan(finish)
    ttft = first - arrival
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(out_len > 1, (finish - first) / np.maximum(out_len - 1, 1), 0.0)
    late = done & ((ttft > ttft_slo_s) | (tpot > tpot_slo_s))
    return int((cols["prompt_len"][late] - cols["num_cached_tokens"][late]).sum())


def migration_section(migrations: list) -> dict:
    """Live migrations: completed, aborted (by reason), stages, blocks copied, and downtime
    (the request stopped on the source until it runs on the destination)."""
    done = [m for m in migrations if m.end_s >= 0]
    reasons: dict[str, int] = {}
    for m in migrations:
        if m.aborted:
            reasons[m.aborted] = reasons.get(m.aborted, 0) + 1
    return {
        "num_migrations": len(done),
        "num_drain_migrations": sum(1 for m in done if m.drain),
        "num_aborted": sum(reasons.values()),
        "abort_reasons": dict(sorted(reasons.items())),
        "mean_stages": float(np.mean([m.num_stages for m in done])) if done else 0.0,
        "copied_blocks": int(sum(m.copied_blocks for m in done)),
        "downtime_s": _stats(np.array([m.end_s - m.stop_s for m in done])),
        "duration_s": _stats(np.array([m.end_s - m.start_s for m in done])),
    }
