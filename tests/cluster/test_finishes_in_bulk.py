"""A step's finishes go down the chain to the request rows as one list (`Engine.on_done_all`,
`Cluster.replicas_done`, `Feed.count_done`, `RequestTable.done_all`): the same rows, summary and
requests as handing them over one by one, and the list path is the one that ran."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from servesim import load_scenario, simulate
from servesim.cluster.cluster import Cluster
from servesim.metrics.request_table import RequestTable

from .helpers import outcome

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(example: str, sets: list[str], monkeypatch, one_by_one: bool) -> tuple:
    """(result, its summary less wall times, rows reduced through `done_all`)."""
    rows = [0]
    done_all = RequestTable.done_all
    with monkeypatch.context() as m:
        m.setattr(RequestTable, "done_all", lambda self, reqs: (rows.__setitem__(0, rows[0] + len(reqs)),
                                                               done_all(self, reqs))[1])
        if one_by_one:  # the chain as it was: `replica_done` for each finish
            m.setattr(Cluster, "replicas_done",
                      lambda self, replica, reqs, now_s: [self.replica_done(replica, r, now_s) for r in reqs])
        result = simulate(load_scenario(str(EXAMPLES / example), sets), keep_requests=True)
        summary = {k: v for k, v in result.summary().items() if "wall" not in k}
    return result, summary, rows[0]


def same(a, b) -> None:
    (ra, sa, _), (rb, sb, _) = a, b
    assert outcome(ra) == outcome(rb)
    assert sa == sb
    ca, cb = ra.columns, rb.columns
    for f in fields(ca):  # the request rows, column by column
        x, y = getattr(ca, f.name), getattr(cb, f.name)
        assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), f.name


@pytest.mark.parametrize("replicas", [1, 8])
def test_an_open_loop_trace_reduces_its_finishes_in_lists(replicas, monkeypatch):
    sets = ["workload.num_requests=800", f"workload.trace.speedup={replicas}"]
    if replicas > 1:
        sets += [f"replicas={replicas}", "router.name=least-requests"]
    bulk = run("azure-conv.yaml", sets, monkeypatch, one_by_one=False)
    slow = run("azure-conv.yaml", sets, monkeypatch, one_by_one=True)
    same(bulk, slow)
    n = len(bulk[0].requests)
    assert n == 800 and bulk[1]["num_requests"] == 800
    assert bulk[2] == n  # every row came through a step's list (the replay finishes nothing alone)
    assert slow[2] == 0


def test_a_closed_loop_hands_finishes_over_one_by_one(monkeypatch):
    # the follow-ups of each finish come before the next one's row, as before: no list reduced
    sets = ["workload.num_requests=300", "workload.sessions.think_time_s=1"]
    bulk = run("sessions.yaml", sets, monkeypatch, one_by_one=False)
    slow = run("sessions.yaml", sets, monkeypatch, one_by_one=True)
    same(bulk, slow)
    assert bulk[2] == 0 and len(bulk[0].requests) == 300
