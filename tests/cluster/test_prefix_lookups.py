"""Policies that never look a request up in the prefix cache (`Scheduler.looks_up_prefixes`:
sarathi, vtc, orca) run their KV cache without prefix caching where nothing outside the
replicas reads it (`PoolSpec.cache_read_outside`), and their results are the same as with the
keys registered: at one replica a router that reads the caches routes nowhere else, so the
same scenario with and without such a router differs only in whether the keys are made."""

from __future__ import annotations

from pathlib import Path

import pytest

from servesim import load_scenario, simulate
from servesim.cluster.build import resolve_pools

from .helpers import SESSIONS, assert_same_steps, outcome

MOONCAKE = str(Path(SESSIONS).with_name("mooncake.yaml"))


def _keyed(result) -> int:
    return sum(r.kv_block_keys is not None for r in result.requests)


@pytest.mark.parametrize("scheduler", ["sarathi", "vtc", "orca"])
@pytest.mark.parametrize("path, sets", [
    (SESSIONS, ["workload.num_requests=300", "workload.arrival.rate_per_s=2", "workload.sessions.think_time_s=1"]),
    (MOONCAKE, ["workload.num_requests=300", "workload.trace.speedup=0.25"]),
])
def test_no_keys_where_nothing_reads_them_and_the_same_results(scheduler, path, sets):
    sets = [f"scheduler.name={scheduler}", *sets]
    bare = simulate(load_scenario(path, sets), keep_steps=True)
    keyed = simulate(load_scenario(path, sets + ["router.name=llm-d"]), keep_steps=True)
    assert _keyed(bare) == 0 and _keyed(keyed) == len(keyed.requests) == 300
    assert outcome(bare) == outcome(keyed)
    assert_same_steps(bare, keyed)
    assert bare.summary()["num_steps"] == keyed.summary()["num_steps"]


def test_a_policy_that_looks_up_keeps_its_keys():
    result = simulate(load_scenario(SESSIONS, ["scheduler.name=vllm", "workload.num_requests=100"]))
    assert _keyed(result) == 100 and result.prefix_hits[1] > 0


@pytest.mark.parametrize("sets, read", [
    ([], False),
    (["replicas=2", "router.name=llm-d"], True),  # a router that reads the caches
    (["replicas=2", "router.name=dynamo-kv"], True),
    (["kv_store.enabled=true"], True),  # a KV store reads what each replica holds
])
def test_which_runs_read_the_caches_from_outside(sets, read):
    pools = resolve_pools(load_scenario(SESSIONS, ["scheduler.name=sarathi", *sets]))
    assert [p.cache_read_outside for p in pools] == [read]
    scheduler, kv = pools[0].make_parts()
    assert kv.enable_prefix_caching is read
