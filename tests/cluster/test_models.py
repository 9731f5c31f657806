"""Pools serving different models: a trace's `model` column routes each request to the pools
serving its model (docs/cluster.md)."""

from __future__ import annotations

import collections

from typer.testing import CliRunner

from servesim import load_scenario, simulate
from servesim.cli import app
from servesim.workload.request import RequestState

POOLS = ("pools: [{name: small, model: llama-3.1-8b, replicas: 2}, "
         "{name: large, model: llama-3.1-70b, tp: 4, replicas: 1}]\n")


def _trace(path, models) -> str:
    rows = ["arrival_s,prompt_len,output_len,model"]
    rows += [f"{i * 0.2:.1f},{100 + 7 * i},{20 + i % 30},{m}" for i, m in enumerate(models)]
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def test_a_traces_model_column_routes_requests_to_the_pools_serving_it(tmp_path):
    models = ["llama-3.1-8b", "llama-3.1-70b", "", "mistral-7b"] * 15  # (empty: the scenario's model)
    scenario = tmp_path / "s.yaml"
    scenario.write_text(POOLS + f"workload: {{trace: {_trace(tmp_path / 't.csv', models)}}}\n")
    r = simulate(load_scenario(scenario))
    got = collections.Counter((q.model, q.replica, q.state) for q in r.requests)
    small = sum(n for (m, i, s), n in got.items() if m in ("llama-3.1-8b", None) and i in (0, 1) and s == RequestState.FINISHED)
    assert small == 30 and got[("llama-3.1-70b", 2, RequestState.FINISHED)] == 15  # (the model column was ignored)
    rejected = [q for q in r.requests if q.state == RequestState.REJECTED]
    assert len(rejected) == 15 and all(q.model == "mistral-7b" for q in rejected)
    assert rejected[0].extra["reject_reason"].startswith("no pool serves model 'mistral-7b'")


def test_requests_for_a_model_whose_replicas_crashed_for_good_fail_while_the_cluster_scales(tmp_path):
    # The autoscaler scales the large pool; the small pool's only replica crashes for good at
    # 5 s. Requests for the small model then fail at once ("no live replica"); before, they were
    # held for a replica that could never come and the autoscaler ticked for ever.
    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        "pools: [{name: small, model: llama-3.1-8b, replicas: 1}, {name: large, model: llama-3.1-70b, tp: 4}]\n"
        "autoscaler: {name: hpa, pool: large, max_replicas: 2, interval_s: 2}\n"
        "faults: {crashes: [{replica: 0, at_s: 5, recovery_s: null}]}\nmax_sim_time_s: 600\n"
        f"workload: {{trace: {_trace(tmp_path / 't.csv', ['llama-3.1-8b', 'llama-3.1-70b'] * 50)}}}\n")
    r = simulate(load_scenario(scenario))
    by = collections.defaultdict(collections.Counter)
    for q in r.requests:
        by[q.model][q.state] += 1
    assert by["llama-3.1-70b"] == {RequestState.FINISHED: 50}
    assert by["llama-3.1-8b"][RequestState.FAILED] > 20 and sum(by["llama-3.1-8b"].values()) == 50
    assert all(q.extra["fail_reason"] == "no live replica" for q in r.requests if q.state == RequestState.FAILED)
    # the CLI's cluster lines call them what they are (they said "rejected")
    res = CliRunner().invoke(app, ["run", str(scenario), "--out", str(tmp_path / "run")])
    failed = by["llama-3.1-8b"][RequestState.FAILED]
    assert res.exit_code == 0 and f"not served: {failed} (no live replica)" in res.stdout and "rejected: " not in res.stdout


def test_a_pools_engines_share_its_decode_forms(monkeypatch):
    """The engines of a pool read one memo of its perf model's decode forms (`DecodeFns`, made
    once for the pool instead of once a replica); a clock change gives an engine its own."""
    from servesim.replica.engine import Engine
    from tests.cluster.helpers import run

    engines = []
    init = Engine.__init__
    monkeypatch.setattr(Engine, "__init__", lambda self, *a, **k: (init(self, *a, **k), engines.append(self))[0])
    run(["replicas=4", "router.name=least-requests"])
    assert len(engines) == 4 and len({id(e.decode_fns) for e in engines}) == 1
    memo = engines[0].decode_fns
    assert memo.perf is engines[0].perf and memo.forms is not None and len(memo) > 1  # (built, and read by all)
    engines[1].set_perf(engines[1].perf, 0.0)
    assert engines[1].decode_fns is not memo and engines[2].decode_fns is memo
