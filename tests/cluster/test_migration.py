"""Llumnix: dispatch by freeness, and live migration (pairing, multi-stage copy, stop-and-copy
downtime, aborts), with every request ending and every block returned."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from servesim import load_scenario, simulate
from servesim.cluster import routers
from servesim.cluster.routers.base import Router
from servesim.cluster.routers.llumnix import Llumnix, dispatch_load
from servesim.cluster.migration import Migrator
from servesim.cluster.view import ClusterView, ReplicaView
from servesim.replica.schedulers import available

MIG = ["workload.trace=null", "workload.arrival.process=poisson", "workload.arrival.rate_per_s=30",
       "workload.num_requests=600", "workload.lengths.dataset=sharegpt", "engine.gpu_memory_utilization=0.3",
       "replicas=4"]


def _view(i, running, waiting, used, prefill_tokens=0):
    return ReplicaView(i, "default", 0.0, running + waiting, running, waiting, used, 1000, prefill_tokens, 0)


def test_llumnix_dispatch_load_and_choice():
    # 1000 blocks, 10 kept by the watermark; 2 requests, 490 used, 160 queued tokens = 10 blocks
    assert dispatch_load(_view(0, 1, 1, 490, 160), 16, 0.01) == pytest.approx(-(1000 - 490 - 10 - 10) / 2)
    assert dispatch_load(_view(1, 0, 0, 0), 16, 0.01) == -math.inf
    views = {0: _view(0, 4, 0, 600), 1: _view(1, 1, 0, 900), 2: _view(2, 2, 0, 200)}
    router = Llumnix(Llumnix.Params(), 3, np.random.default_rng(0))
    view = ClusterView(0.0, [0, 1, 2], views.__getitem__, lambda i, r: 0)
    assert router.route(None, view) == 2  # 790 free blocks for 2 requests: the freest


class AllToFirst(Router):
    """Test router: every request to the first candidate (a maximally imbalanced dispatch)."""

    def route(self, req, view):
        return view.candidates[0]


@pytest.fixture
def all_to_first(monkeypatch):
    routers.REGISTRY.available()
    AllToFirst.name = "test-all-to-first"
    monkeypatch.setitem(routers.REGISTRY._classes, "test-all-to-first", AllToFirst)
    return "test-all-to-first"


def test_migration_moves_requests_off_an_overloaded_replica(all_to_first):
    sets = ["workload.trace=null", "workload.arrival.rate_per_s=4", "workload.num_requests=120",
            "workload.lengths.dataset=sharegpt", "engine.gpu_memory_utilization=0.25", "replicas=2",
            f"router={all_to_first}"]
    off = simulate(load_scenario(None, sets))
    on = simulate(load_scenario(None, sets + ["migration.enabled=true"]))
    assert {r.replica for r in off.requests} == {0}
    moved = [r for r in on.requests if r.moves]
    m = on.summary()["migration"]
    # each migration records one move (a request may move 0 -> 1 -> 0 -> 1 as loads change)
    assert m["num_migrations"] == sum(len(r.moves) - 1 for r in moved) and len(moved) > 5
    assert all(r.replica == 1 for r in moved)
    assert on.summary()["num_finished"] == 120
    # stop-and-copy: at most last_stage_max_blocks (4) blocks of 16 x 128 KiB at 10 GB/s, plus 1 ms
    assert m["downtime_s"]["max"] <= 1e-3 + 4 * 16 * 131072 / 10e9 + 1e-12
    assert m["downtime_s"]["max"] < 0.01 * m["duration_s"]["mean"] + 2e-3
    assert on.summary()["num_preemptions"] < off.summary()["num_preemptions"]
    assert on.summary()["ttft_s"]["p99"] < 0.5 * off.summary()["ttft_s"]["p99"]


def test_migration_cuts_tail_ttft_against_dispatch_only():
    # KV memory tighter than MIG's 0.3: there, since recompute hits a preempted request's own
    # blocks, preemptions no longer pile up and migration has little left to fix (19 migrations,
    # p99 TTFT x0.90); at 0.25, 249 migrations and p99 x0.58
    sets = MIG + ["engine.gpu_memory_utilization=0.25", "router=llumnix"]
    dispatch_only = simulate(load_scenario(None, sets)).summary()
    migrating = simulate(load_scenario(None, sets + ["migration.enabled=true"])).summary()
    assert migrating["migration"]["num_migrations"] > 20
    assert migrating["ttft_s"]["p99"] < 0.9 * dispatch_only["ttft_s"]["p99"]


def test_no_migration_section_when_off():
    s = simulate(load_scenario(None, MIG[:4] + ["workload.num_requests=50", "replicas=2"])).summary()
    assert "migration" not in s


def _outcome(result) -> list[tuple]:
    return [(r.id, int(r.state), r.replica, r.first_token_s, r.finish_s, tuple(r.token_steps), tuple(r.moves))
            for r in result.requests]


@pytest.mark.parametrize("scheduler", available())
def test_every_policy_migrates_and_fast_forward_equals_stepping(scheduler):
    # Each policy's scheduler at both ends of a migration: the migrator reads its head of line
    # (vtc's is its least-served tenant's: its queues have no single head), a destination
    # holds blocks for KV on its way that its admission must not take (vtc allocated past
    # them; orca's stuck check did not count them) and orca reserves a newcomer's whole
    # reservation there; a policy's batch order at a boundary is the same after a stretch
    # (batchllm's admissions inside it were appended, and the migrator takes the last)
    sets = MIG + ["workload.num_requests=300", "router=llumnix", "migration.enabled=true"]
    fast = simulate(load_scenario(None, [f"scheduler.name={scheduler}", *sets]))
    slow = simulate(load_scenario(None, [f"scheduler.name={scheduler}", *sets, "engine.fast_forward=false"]))
    assert _outcome(fast) == _outcome(slow)
    assert fast.summary()["migration"] == slow.summary()["migration"]
    assert fast.summary()["num_finished"] == 300
    if scheduler != "sglang":  # (its admission keeps KV headroom by its new-token ratio: no replica
        assert fast.summary()["migration"]["num_migrations"] >= 3  # here is loaded enough to migrate)


def test_a_no_evict_destination_reserves_a_migrated_requests_whole_output():
    # TensorRT-LLM's GUARANTEED_NO_EVICT admits only what its whole reservation covers; a
    # migrated request now holds its reservation at the destination too (`transfer_tokens`),
    # taken only from the room its running requests' reservations leave (`transfer_room`):
    # before, a migration took blocks promised to them and a decode found none (an AssertionError)
    path = str(Path(__file__).resolve().parents[2] / "examples" / "sessions.yaml")
    sets = ["scheduler.name=trtllm", "workload.num_requests=400", "workload.arrival.rate_per_s=3", "replicas=3",
            "router.name=llumnix", "migration.enabled=true", "engine.gpu_memory_utilization=0.3"]
    fast = simulate(load_scenario(path, sets))
    slow = simulate(load_scenario(path, sets + ["engine.fast_forward=false"]))
    assert _outcome(fast) == _outcome(slow)
    s = fast.summary()
    assert s["num_finished"] + s["num_rejected"] == 400 and s["num_finished"] > 300  # (prompts past a whole
    assert s["migration"]["num_migrations"] >= 2  # reservation of the cache are refused at admission)
    assert s["migration"]["abort_reasons"]["no room at the destination"] >= 10  # (its whole output rarely fits)


def test_a_destination_grows_its_reservation_for_a_request_that_grew_during_its_stages(monkeypatch):
    # The destination's blocks were reserved once, at the migration's start (the context then
    # plus `last_stage_max_blocks`); a long prefill step on the source delayed a stage's end by
    # 3 s, the request decoded 159 tokens meanwhile and arrived with 541 blocks of KV into 535
    # (vtc on Mooncake; fast-forward and stepping then grew it differently). As Llumnix
    # allocates each stage's blocks at the destination first, the reservation now grows there
    # before the stage (or the stop) is decided again at the source
    grown = []
    grow = Migrator._grow
    monkeypatch.setattr(Migrator, "_grow", lambda self, m, n, t: (grown.append(n - m.reserved_blocks), grow(self, m, n, t)))
    path = str(Path(__file__).resolve().parents[2] / "examples" / "mooncake.yaml")
    sets = ["scheduler.name=vtc", "workload.num_requests=300", "workload.trace.speedup=1", "replicas=2",
            "router.name=llumnix", "migration.enabled=true", "engine.gpu_memory_utilization=0.5"]
    fast = simulate(load_scenario(path, sets))
    n = len(grown)
    slow = simulate(load_scenario(path, sets + ["engine.fast_forward=false"]))
    assert _outcome(fast) == _outcome(slow)
    assert fast.summary()["migration"] == slow.summary()["migration"]
    assert n >= 1 and len(grown) == 2 * n and max(grown) >= 5, grown


def test_hygen_with_offline_work_migrates_and_fast_forward_equals_stepping():
    # HyGen's offline requests wait in a queue of their own: with only those waiting, the
    # migrator's head of line is the offline queue's front (it read the empty online queue)
    sets = MIG + ["workload.num_requests=300", "router=llumnix", "migration.enabled=true", "scheduler.name=hygen",
                  "workload.attributes.offline_share=0.3"]
    fast = simulate(load_scenario(None, sets))
    slow = simulate(load_scenario(None, sets + ["engine.fast_forward=false"]))
    assert _outcome(fast) == _outcome(slow)
    assert fast.summary()["num_finished"] == 300
    assert fast.summary()["migration"]["num_migrations"] >= 3


@pytest.mark.parametrize("extra", [["engine.max_num_batched_tokens=512", "engine.max_num_seqs=256"],
                                   ["engine.num_speculative_tokens=1"]])
def test_vtc_with_tenants_waiting_steps_while_the_migrator_reads_its_head(extra):
    # VTC's head of line is the least-served waiting tenant's, by counters a stretch charges at
    # its end: a migrator's poll inside a stretch read another head than stepping (279 and 396 of
    # 1,182 requests differed). With two tenants waiting and a migrator, VTC steps.
    sets = ["scheduler.name=vtc", "workload.trace.end_s=250", "workload.trace.speedup=4", "replicas=2",
            "router.name=mooncake", 'workload.attributes.tenants={"a": 1, "b": 2, "c": 1}', "migration.enabled=true",
            "engine.gpu_memory_utilization=0.3", *extra]
    path = str(Path(__file__).resolve().parents[2] / "examples" / "azure-conv.yaml")
    fast = simulate(load_scenario(path, sets), keep_steps=True)
    slow = simulate(load_scenario(path, sets + ["engine.fast_forward=false"]))
    assert _outcome(fast) == _outcome(slow)
    assert fast.summary()["migration"] == slow.summary()["migration"]
    assert fast.num_fast_forwarded_steps > 0.3 * len(fast.steps)  # (it still fast-forwards the rest)


def test_vtc_lifts_a_tenant_arriving_inside_a_stretch_at_its_end_also_with_migration_ports():
    # With live migration every replica has KV ports, so an arrival cuts a stretch without the
    # policy being asked whether it keeps it; VTC took that as "no stretch" and lifted the new
    # tenant's counter at once, from counters the stretch had not charged yet (492 of about 1,200
    # requests differed from stepping). It is told of every arrival inside a stretch now.
    sets = ["scheduler.name=vtc", "workload.trace.end_s=150", "workload.trace.speedup=8", "replicas=2",
            "router.name=llm-d", 'workload.attributes.tenants={"a": 1, "b": 2, "c": 1}', "migration.enabled=true",
            "engine.gpu_memory_utilization=0.3"]
    path = str(Path(__file__).resolve().parents[2] / "examples" / "azure-conv.yaml")
    fast = simulate(load_scenario(path, sets), keep_steps=True)
    slow = simulate(load_scenario(path, sets + ["engine.fast_forward=false"]))
    assert _outcome(fast) == _outcome(slow)
    assert fast.summary()["migration"]["num_migrations"] > 0
    assert fast.num_fast_forwarded_steps > 0.3 * len(fast.steps)


def test_vtc_settles_a_stretch_before_an_arrival_so_a_migrator_reads_stepping_s_head():
    # An arrival inside a stretch (cut there by the KV ports) lifted its tenant's counter at the
    # stretch's end; a migrator's poll during the step in flight then read the head of line from
    # counters without that lift and without the steps charged so far (209 of 332 requests
    # differed). Now the steps that ended before each arrival, or a migrated request's landing,
    # are applied first and the boundary before it runs again: the lift reads stepping's counters.
    sets = ["scheduler.name=vtc", "workload.trace.end_s=90", "workload.trace.speedup=4", "replicas=2",
            "router.name=mooncake", 'workload.attributes.tenants={"a": 1, "b": 2, "c": 1}', "migration.enabled=true",
            "engine.gpu_memory_utilization=0.25", "engine.num_speculative_tokens=1", "engine.max_num_seqs=64"]
    path = str(Path(__file__).resolve().parents[2] / "examples" / "azure-conv.yaml")
    fast = simulate(load_scenario(path, sets), keep_steps=True)
    slow = simulate(load_scenario(path, sets + ["engine.fast_forward=false"]))
    assert _outcome(fast) == _outcome(slow)
    assert fast.summary()["migration"] == slow.summary()["migration"]
    assert fast.summary()["migration"]["num_migrations"] > 10
    assert fast.num_fast_forwarded_steps > 0.3 * len(fast.steps)
