"""The cluster's one-pass read of every candidate's in-flight count equals each replica's own."""

from __future__ import annotations

from pathlib import Path

from servesim import load_scenario, simulate
from servesim.cluster import cluster as cluster_module
from servesim.cluster.view import ClusterView

ROOT = Path(__file__).resolve().parents[2]


def test_bulk_outstandings_equal_each_replicas_count_at_every_arrival(monkeypatch):
    bulk = cluster_module.outstandings_at
    reads, inside = [], []

    def checked(replicas, indices, t):
        got = bulk(replicas, indices, t)
        assert got == [replicas[i].outstanding_at(t) for i in indices]
        reads.append(got)
        # finishes inside a stretch in flight, counted without applying it
        inside.append(sum(replicas[i].num_outstanding for i in indices) - sum(got))
        return got

    monkeypatch.setattr(cluster_module, "outstandings_at", checked)
    scenario = load_scenario(ROOT / "examples/cluster-azure-conv.yaml", ["workload.num_requests=600"])
    simulate(scenario)
    assert len(reads) == 600 and all(len(r) == 8 for r in reads)
    assert sum(n > 0 for n in inside) > 20  # the stretch path of the count ran, not only idle replicas


def test_a_view_reads_the_counts_in_one_call_unless_it_made_views():
    calls = []
    view = ClusterView(0.0, [0, 2], lambda i: None, lambda i, r: 0, outstanding=lambda i: 10 + i,
                       outstandings=lambda c: calls.append(list(c)) or [10 + i for i in c])
    assert view.outstandings() == [10, 12]
    assert calls == [[0, 2]]
