"""Schedulers with per-request state of their own on disaggregated pools: a request that arrives
on a decode replica with its KV computed elsewhere (`Scheduler.add_transferred`, blocks from
`KVCacheManager.reserve`) must be known to that state as an admitted one is. SGLang's radix
cache, Autellix's process table and VTC's tenant counters each missed it (a KeyError on the
decode replica's first step)."""

from __future__ import annotations

from pathlib import Path

import pytest

from servesim import load_scenario, simulate
from servesim.replica.kv_cache import KVCacheManager
from servesim.workload.request import RequestState
from tests.cluster.helpers import assert_same_steps, count_calls, outcome

ROOT = Path(__file__).resolve().parents[2]
N = 60


def _run(example: str, scheduler: str, fast_forward: bool):
    sets = [f"scheduler.name={scheduler}", f"workload.num_requests={N}",
            f"engine.fast_forward={str(fast_forward).lower()}"]
    return simulate(load_scenario(ROOT / f"examples/{example}.yaml", sets), keep_steps=True)


@pytest.mark.parametrize("example", ["splitwise-pd", "mooncake-pd"])
@pytest.mark.parametrize("scheduler", ["sglang", "autellix", "vtc"])
def test_transferred_requests_finish_conserve_blocks_and_fast_forward_equals_stepping(
        scheduler, example, monkeypatch):
    calls = {"check": 0}
    count_calls(monkeypatch, KVCacheManager, "check_all_free", calls, "check")
    fast = _run(example, scheduler, True)
    n_replicas = len(fast.replicas)
    # the end-of-run invariants checked every replica's blocks (all returned, none held)
    assert calls["check"] == n_replicas
    assert fast.summary()["disaggregation"]["num_transfers"] > 0
    assert [r.state for r in fast.requests] == [RequestState.FINISHED] * N
    slow = _run(example, scheduler, False)
    assert calls["check"] == 2 * n_replicas
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)


def test_orca_decode_replicas_reserve_a_transferred_requests_whole_reservation():
    # Orca's running pass never allocates past a request's reservation: one handed over from a
    # prefill replica holds it too (`Scheduler.transfer_tokens`), or its decodes ran the decode
    # replica out of blocks ("a reserved request ran out of KV blocks") once the cache filled
    pd = "pools=[{name: p, role: prefill, replicas: 2}, {name: d, role: decode, replicas: 1, gpus_per_node: 1}]"
    sets = ["workload.trace=null", "workload.arrival.process=poisson", "workload.arrival.rate_per_s=30",
            "workload.num_requests=300", "workload.lengths.dataset=sharegpt", "engine.gpu_memory_utilization=0.3",
            "replicas=1", pd, "scheduler.name=orca"]
    fast = simulate(load_scenario(None, sets), keep_steps=True)
    assert [r.state for r in fast.requests] == [RequestState.FINISHED] * 300
    assert fast.summary()["disaggregation"]["num_transfers"] == 300
    slow = simulate(load_scenario(None, sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)


def test_speculative_decode_replicas_keep_a_handed_over_requests_runs_apart():
    # A request's first run on its decode replica must not continue its run on the prefill
    # replica when the step numbers happen to follow on (`moved_runs.split`, after stepped steps
    # and speculative stretches alike): request 5 here, first token at the prefill
    # replica's step 2, next tokens at the decode replica's steps 3, 4, ...
    sets = ["engine.num_speculative_tokens=2", "workload.trace.end_s=200", "workload.trace.speedup=4",
            "pools=[{name: p, role: prefill, replicas: 1}, {name: d, role: decode, replicas: 2}]"]
    path = ROOT / "examples/azure-code.yaml"
    fast = simulate(load_scenario(path, sets), keep_steps=True)
    slow = simulate(load_scenario(path, sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert outcome(fast) == outcome(slow)
    assert fast.summary()["itl_s"] == slow.summary()["itl_s"]
    req = next(r for r in fast.requests if r.id == 5)
    assert req.moves == [(0, 0), (2, 2)] and req.token_steps[:2] == [2, 2]  # (its first token alone)
