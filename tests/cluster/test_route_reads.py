"""The cluster's reads of every candidate's in-flight count (kept between arrivals, or in one
pass) equal each replica's own."""

from __future__ import annotations

from pathlib import Path

import pytest

from servesim import load_scenario, simulate
from servesim.cluster import cluster as cluster_module
from servesim.cluster.counts import InFlightCounts
from servesim.cluster.view import ClusterView
from servesim.replica.replica import Replica

from .helpers import count_calls

ROOT = Path(__file__).resolve().parents[2]


def test_bulk_outstandings_equal_each_replicas_count_at_every_arrival(monkeypatch):
    """Where counts are not kept between arrivals (a power section here), the one-pass read."""
    bulk = cluster_module.outstandings_at
    reads, inside = [], []

    def checked(replicas, t, indices):
        got = bulk(replicas, t, indices)
        assert got == [replicas[i].outstanding_at(t) for i in indices]
        reads.append(got)
        # finishes inside a stretch in flight, counted without applying it
        inside.append(sum(replicas[i].num_outstanding for i in indices) - sum(got))
        return got

    monkeypatch.setattr(cluster_module, "outstandings_at", checked)
    scenario = load_scenario(ROOT / "examples/cluster-azure-conv.yaml", ["workload.num_requests=600",
                                                                        "power.gpu_power_cap_w=600"])
    simulate(scenario)
    assert len(reads) == 600 and all(len(r) == 8 for r in reads)
    assert sum(n > 0 for n in inside) > 20  # the stretch path of the count ran, not only idle replicas


def _kept_counts_checked(monkeypatch) -> dict:
    """Check every read of the kept counts against each replica's own count at that time;
    count the reads, the replicas read again, and the finishes counted inside stretches."""
    kept = InFlightCounts.at
    seen = {"reads": 0, "candidates": 0, "read_again": 0, "inside": 0, "views_made": 0, "aims": 0}

    def checked(self, t, indices):
        got = kept(self, t, indices)
        assert got == [self.replicas[i].outstanding_at(t) for i in indices]
        seen["reads"] += 1
        seen["candidates"] += len(indices)
        seen["inside"] += sum(self.replicas[i].num_outstanding for i in indices) > sum(got)
        return got

    monkeypatch.setattr(InFlightCounts, "at", checked)
    count_calls(monkeypatch, Replica, "outstanding_until", seen, "read_again")
    count_calls(monkeypatch, ClusterView, "__init__", seen, "views_made")
    count_calls(monkeypatch, ClusterView, "aim", seen, "aims")
    return seen


@pytest.mark.parametrize("sets, inside, share", [
    (["workload.num_requests=1500"], 10, 0.35),
    (["workload.num_requests=600", "replicas=64"], 0, 0.35),  # (every stretch there is a lone request's)
    (["workload.num_requests=1500", "frontend.request_s=0.004"], 10, 0.35),  # submissions reach engines later
    # speculative stretches keep their counts up to their next finish too (`SpecStretch.finished_until`;
    # read at every arrival before: 66 % of the candidates read again here, 35 % now, their
    # extensions being events here)
    (["workload.num_requests=1500", "engine.num_speculative_tokens=3"], 10, 0.45),
])
def test_kept_counts_equal_each_replicas_count_and_save_reads(monkeypatch, sets, inside, share):
    seen = _kept_counts_checked(monkeypatch)
    simulate(load_scenario(ROOT / "examples/cluster-azure-conv.yaml", sets))
    n = int(sets[0].split("=")[1])
    assert seen["reads"] == n
    assert seen["inside"] >= inside  # finishes inside stretches in flight were counted, not only idle replicas
    # the point: most candidates' counts are not read again at each arrival (8 replicas: about
    # one in four is; 64: about one in thirty)
    assert seen["read_again"] < share * seen["candidates"], seen
    assert seen["views_made"] == 1 and seen["aims"] == n  # one view, aimed at each decision


def test_kept_counts_through_crashes_and_recoveries(monkeypatch):
    seen = _kept_counts_checked(monkeypatch)
    result = simulate(load_scenario(ROOT / "examples/cluster-faults.yaml",
                                    ["router.name=least-requests", "workload.trace.end_s=1500"]))
    assert result.cluster["num_rerouted"] > 0  # a crash re-routed requests, read through the kept counts
    assert seen["reads"] > len(result.requests) and seen["read_again"] < 0.6 * seen["candidates"], seen


def test_a_view_reads_the_counts_in_one_call_unless_it_made_views():
    calls = []
    view = ClusterView(0.0, [0, 2], lambda i: None, lambda i, r: 0, outstanding=lambda i: 10 + i,
                       outstandings=lambda t, c: calls.append((t, list(c))) or [10 + i for i in c])
    assert view.outstandings() == [10, 12]
    assert calls == [(0.0, [0, 2])]
    # aimed at the next decision, it reads at that decision's time and candidates, and forgets its views
    view.view(0)
    assert view.aim(1.5, [1]).outstandings() == [11] and calls[-1] == (1.5, [1]) and not view._memo


def test_candidates_follow_every_status_change_of_a_replica():
    """The list of replicas taking requests is kept between arrivals and made again after any
    change of `alive` or `state` (crash, recovery, lifecycle), per model; callers share it, read only (a change makes a new list)."""
    from servesim.cluster.cluster import Cluster
    from servesim.core.loop import EventLoop
    from servesim.replica.replica import DRAINING, READY, Replica
    from servesim.workload.request import Request

    replicas = [Replica(i, "pool", None, None) for i in range(4)]
    cluster = Cluster(replicas, ["a", "a", "b", "b"], object(), EventLoop(), lambda req, t: None)
    cluster.index_models()
    req_a, req_b = Request(id=0, arrival_s=0.0, prompt_len=8, output_len=2, model="a"), \
        Request(id=1, arrival_s=0.0, prompt_len=8, output_len=2, model="b")
    first = cluster._candidates(req_a)
    assert first == [0, 1] and cluster._candidates(req_b) == [2, 3]
    assert cluster._candidates(req_a) is first  # the kept list itself, not a copy per arrival
    replicas[1].alive = False
    assert cluster._candidates(req_a) == [0]
    assert first == [0, 1]  # a list handed out is never changed: a status change makes a new one
    replicas[0].state = DRAINING
    assert cluster._candidates(req_a) == [] and cluster._candidates(req_b) == [2, 3]
    replicas[1].alive = True
    replicas[0].state = READY
    replicas[3].alive = False
    assert cluster._candidates(req_a) == [0, 1] and cluster._candidates(req_b) == [2]
    assert cluster._candidates(Request(id=2, arrival_s=0.0, prompt_len=8, output_len=2, model="c")) is None
