"""One replica that only the feed's arrivals reach (`simulation._sole_replica`): arrivals go to
it unrouted, and a stretch priced to the next arrival has no end event of its own, that
arrival settling it (`Engine._settle`). The run is the one with the end events, request for
request and in its summary, with about one event per arrival instead of two."""

from __future__ import annotations

from pathlib import Path

import pytest

from servesim import load_scenario, simulate
from servesim import simulation
from servesim.workload.generated import GeneratedWorkload

ROOT = Path(__file__).resolve().parents[2]
POISSON = ["workload.trace=null", "workload.arrival.process=poisson", "workload.lengths.dataset=sharegpt",
           "workload.arrival.rate_per_s=5"]


def _outcome(result):
    reqs = [(r.id, r.replica, int(r.state), r.arrival_s, r.first_scheduled_s, r.first_token_s, r.finish_s,
             tuple(r.token_steps), r.num_output_tokens, r.extra.get("reject_reason")) for r in result.requests]
    summary = {k: v for k, v in result.summary().items() if "wall" not in k}
    return reqs, summary, result.num_fast_forwarded_steps


def _both(monkeypatch, path, sets):
    """(run with the sole replica's path, run without it: every stretch with its end event)."""
    sole = simulate(load_scenario(path, sets))
    with monkeypatch.context() as m:
        m.setattr(simulation, "_sole_replica", lambda cluster, feed: None)
        plain = simulate(load_scenario(path, sets))
    return sole, plain


@pytest.mark.parametrize("path,sets", [
    (ROOT / "examples" / "azure-conv.yaml", ["workload.num_requests=1500"]),
    (None, POISSON + ["workload.num_requests=3000"]),
    (None, POISSON + ["workload.num_requests=1500", "scheduler.name=sarathi"]),
    (None, POISSON + ["workload.num_requests=1500", "engine.max_model_len=1500"]),  # (some rejected by the engine)
    # (the run stops inside a stretch an arrival cut, whose end lies past the run's: not handled)
    (None, POISSON + ["workload.num_requests=3000", "max_sim_time_s=100"]),
])
def test_sole_replica_matches_the_run_with_end_events(monkeypatch, path, sets):
    sole, plain = _both(monkeypatch, path, sets)
    assert _outcome(sole) == _outcome(plain)
    n = len(sole.requests)
    # (with end events: an arrival and the end of the stretch it cuts or joins, about two a
    # request) most arrivals settled the stretch without its end event
    assert plain.num_events - sole.num_events > 0.4 * n


def test_requests_the_cluster_ends_settle_the_stretch(monkeypatch):
    """Requests naming a model go through the routing path (`Cluster._dispatch`), and those
    naming one nobody serves end there without reaching the engine: the stretch left without
    an end event is settled all the same."""
    arrivals = GeneratedWorkload.arrivals

    def named(self):
        for req in arrivals(self):
            if req.id % 7 == 3:
                req.model = "nobody-serves-it"
            yield req

    monkeypatch.setattr(GeneratedWorkload, "arrivals", named)
    sole, plain = _both(monkeypatch, None, POISSON + ["workload.num_requests=1500"])
    assert _outcome(sole) == _outcome(plain)
    rejected = [r for r in sole.requests if r.model]
    assert len(rejected) > 150 and all(r.extra["reject_reason"].startswith("no pool serves") for r in rejected)
    assert sole.num_events < 0.7 * plain.num_events
