"""Wiring of the cluster's optional machinery: prefill/decode disaggregation and live migration
(built by `simulation.simulate` when the scenario asks for them), and their summary."""

from __future__ import annotations

import numpy as np

from servesim.cluster.build import PoolSpec
from servesim.cluster.cluster import Cluster
from servesim.cluster.disaggregation import Disaggregator
from servesim.cluster.kv_store import KVStore
from servesim.cluster.migration import Migrator
from servesim.core.loop import PRIO_ARRIVAL
from servesim.cluster.routers import get_router
from servesim.metrics.cluster import ReplicaRecord
from servesim.metrics.disaggregation import disaggregation_section, late_prefill_tokens
from servesim.replica.kv_ports import KVPorts
from servesim.scenario import Scenario
from servesim.workload.request import Request, RequestState


def build_disaggregator(scenario: Scenario, pools: list[PoolSpec], cluster: Cluster, n: int,
                        seed: np.random.SeedSequence) -> Disaggregator:
    """The disaggregator with its decode router (its own random stream), ports attached."""
    cfg = scenario.disaggregation
    cls = get_router(cfg.decode_router.name)
    decode_router = cls(cfg.decode_router.params(), n, np.random.default_rng(seed))
    decode_router.bind(cluster.replicas, cluster.kv_store)
    d = Disaggregator(cluster, pools, cfg, scenario.network, decode_router)
    d.attach()
    return d


def build_kv_store(scenario: Scenario, pools: list[PoolSpec], cluster: Cluster) -> KVStore:
    """The KV store; every finished request's prompt prefix is written to it when it finishes
    (prefill hand-offs write theirs in the disaggregator). A finish inside a fast-forwarded
    stretch, which the stretch processes when it ends, is written at its time through the
    engine's `notice` (`replica/finish_notices.py`), as a closed-loop workload's follow-ups are
    made: the next dispatch to any replica reads the store."""
    by_name = {p.name: p for p in pools}
    per_token = [by_name[r.pool].perf.kv_bytes_per_token * by_name[r.pool].tp for r in cluster.replicas]
    store = KVStore(scenario.kv_store, [r.engine for r in cluster.replicas], per_token)
    done = cluster.on_done
    told: set[int] = set()  # written at a notice, not again when done

    def on_done(req: Request, now_s: float) -> None:
        if told and req.id in told:
            told.remove(req.id)
        elif req.state == RequestState.FINISHED and req.replica >= 0:
            store.put(req, req.replica)
        done(req, now_s)

    def noticing(follow_ups):
        def notice(req: Request, now_s: float) -> None:
            store.put(req, req.replica)
            told.add(req.id)
            if follow_ups is not None:
                follow_ups(req, now_s)
        return notice

    for r in cluster.replicas:
        r.engine.notice = noticing(r.engine.notice)
    cluster.on_done = on_done
    return store


def build_migrator(scenario: Scenario, pools: list[PoolSpec], cluster: Cluster, active) -> Migrator:
    """The migrator, ticking while `active()`, with ports on every replica."""
    def unused(*_) -> None:  # (mixed replicas hand nothing off and expect no P/D transfer)
        raise AssertionError("no prefill/decode roles with migration")

    by_name = {p.name: p for p in pools}  # every replica, the autoscaler's spares included
    per_block = [by_name[r.pool].perf.kv_bytes_per_token * by_name[r.pool].tp * by_name[r.pool].config.block_size
                 for r in cluster.replicas]
    for rep in cluster.replicas:
        rep.engine.ports = KVPorts(rep.engine, unused, unused)
    m = Migrator(cluster, scenario.migration, per_block, active)
    m.start()
    for c in scenario.faults.crashes:  # notices of coming crashes: drain by migration
        if c.warning_s > 0:
            cluster.loop.schedule(max(c.at_s - c.warning_s, 0.0), lambda t, i: m.drain(i, t), c.replica, PRIO_ARRIVAL)
    return m


def disaggregation_summary(cluster: Cluster, records: list[ReplicaRecord]) -> dict | None:
    """The `disaggregation` summary section (None without prefill/decode roles)."""
    d = cluster.disagg
    if d is None:
        return None
    arrivals = cluster.requests.cols["arrival_s"]  # the run's RequestTable, closed
    start = float(arrivals.min()) if len(arrivals) else 0.0
    end = max((float(rec.steps.end_s.max()) for rec in records if len(rec.steps)), default=start)
    span_s = max(end - start, 1e-12)
    busy = [float((rec.steps.end_s - rec.steps.start_s).sum() / span_s) for rec in records]
    out = disaggregation_section(d.transfers, list(d.links.values()), d.roles, busy, d.num_local_prefills,
                                 d.cfg.first_token, span_s)
    if d.cfg.overflow != "off":
        out["num_overflow"] = d.num_overflow
    if d.admission is not None:
        rej = out["rejection"] = d.admission.section()
        rej["late_prefill_tokens"] = late_prefill_tokens(cluster.requests.cols, d.cfg.ttft_slo_s, d.cfg.tbt_slo_s)
        rej["wasted_prefill_tokens"] = rej["rejected_after_prefill_tokens"] + rej["late_prefill_tokens"]
    return out
