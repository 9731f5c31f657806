"""The cluster KV store: tiers with LRU spill, load decisions and times, the engine's use of
loaded prefixes, tier-weighted routing (Dynamo), and the Mooncake conductor with a store."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from servesim import load_scenario, simulate
from servesim.cluster.kv_store import KVStore, KVStoreConfig, Store, TierConfig
from servesim.perf import build_perf_model
from servesim.scenario import Scenario
from tests.cluster.views import cluster, make_router, req, rv

ROOT = Path(__file__).resolve().parents[2]
PERF = build_perf_model("llama-3.1-8b", "h100-sxm", 1, "bf16", Scenario().perf)
BLOCK = 512 * PERF.kv_bytes_per_token  # bytes of one 512-token prefix block


def _tiers(cpu_blocks: int, disk_blocks: int) -> list[TierConfig]:
    return [TierConfig(name="cpu", capacity_gb=cpu_blocks * BLOCK / 1e9, load_bandwidth_GBps=20.0),
            TierConfig(name="disk", capacity_gb=disk_blocks * BLOCK / 1e9, load_bandwidth_GBps=4.0)]


def test_tiers_spill_lru_blocks_down_and_drop_them_at_the_bottom():
    store = Store(_tiers(3, 2))
    store.put((1, 2, 3), BLOCK)
    store.put((4, 5), BLOCK)  # cpu holds 3: the least recent (3, then 2: tails before roots) go to disk
    assert list(store.tiers[0].blocks) == [1, 5, 4] and list(store.tiers[1].blocks) == [3, 2]
    assert store.match((1, 2, 3, 9)) == [0, 1, 1]
    store.put((6,), BLOCK)  # 1 goes down, 3 falls off the disk
    assert list(store.tiers[1].blocks) == [2, 1] and store.tiers[1].evicted == 1
    assert store.match((1, 2, 3)) == [1, 1]
    store.put((2,), BLOCK)  # a re-put promotes it to cpu
    assert store.match((2,)) == [0] and 2 not in store.tiers[1].blocks


class _Engine:
    def __init__(self) -> None:
        self.perf = PERF
        self.config = type("C", (), {"max_num_batched_tokens": 8192})()


def _store(scope: str = "cluster", n: int = 2, **cfg) -> KVStore:
    return KVStore(KVStoreConfig(enabled=True, scope=scope, tiers=_tiers(4, 8), **cfg), [_Engine()] * n,
                   [PERF.kv_bytes_per_token] * n)


def test_load_time_counts_each_tier_at_its_bandwidth_and_skips_what_does_not_pay():
    kv = _store()
    r = req(0, prompt=4000, hash_ids=tuple(range(7)), block=512)
    kv.put(r, 0)  # 7 blocks: 4 stay in cpu (0, 1, 2, 3: roots last), 3 go to disk
    assert kv.tier_blocks(1, r, 0) == [4, 3] and kv.tier_blocks(1, r, 2) == [2, 3]
    tokens, load_s = kv.plan(r, 1, 0)
    assert tokens == 7 * 512
    assert load_s == pytest.approx(1e-3 + 4 * BLOCK / 20e9 + 3 * BLOCK / 4e9)
    assert kv.load(r, 1, 0) == load_s and r.extra["kv_store_tokens"] == 3584 and kv.num_loads == 1
    slow = _store(load_latency_s=10.0)  # a load slower than recomputing 3584 tokens is skipped
    slow.put(r, 0)
    assert slow.plan(r, 1, 0) == (0, 0.0) and slow.load(req(1, prompt=4000, hash_ids=r.hash_ids, block=512), 1, 0) == 0.0
    assert slow.num_skipped == 1
    local = _store(scope="replica")  # each replica has its own: only replica 0 holds the prefix
    local.put(r, 0)
    assert local.tier_blocks(0, r, 0) == [4, 3] and local.tier_blocks(1, r, 0) == [0, 0]


ONE = ["workload.trace=null", "workload.num_requests=2", "workload.arrival.rate_per_s=0.05",
       "workload.lengths.prompt_tokens=100", "workload.lengths.output_tokens=4", "workload.hash_block_tokens=512",
       "workload.shared_prefix.tokens=4096", "engine.enable_prefix_caching=false"]


def test_engine_starts_a_loaded_request_past_its_stored_prefix():
    """Two prompts with the same 4096-token prefix, the second after the first finished, on an
    engine without prefix caching: the second waits for the load, then prefills only its own
    100 tokens; the first, with nothing stored, prefills everything."""
    res = simulate(load_scenario(None, ONE + ["kv_store.enabled=true"]))
    a, b = sorted(res.requests, key=lambda r: r.arrival_s)
    assert b.arrival_s > a.finish_s and a.prompt_len == b.prompt_len == 4196
    store = res.summary()["kv_store"]
    assert store["num_loads"] == 1 and store["loaded_tokens"] == 4096
    assert a.num_cached_tokens == 0 and b.num_cached_tokens == 4096
    load_s = 1e-3 + 8 * BLOCK / 25e9  # 8 blocks from the cpu tier at its default bandwidth
    assert store["mean_load_s"] == pytest.approx(load_s)
    assert b.first_scheduled_s == pytest.approx(b.arrival_s + load_s)
    without = simulate(load_scenario(None, ONE))
    b0 = sorted(without.requests, key=lambda r: r.arrival_s)[1]
    assert b.first_token_s - b.arrival_s < 0.5 * (b0.first_token_s - b0.arrival_s)
    assert "kv_store" not in without.summary()


def test_dynamo_weighs_store_hits_by_tier():
    kv = _store(scope="replica", n=3)
    r = req(0, prompt=4096, hash_ids=tuple(range(8)), block=512)
    kv.put(r, 1)  # replica 1: cpu holds 4 blocks (0-3, roots last), 4-7 spill to disk
    kv.put(req(1, prompt=2048, hash_ids=(0, 1, 2, 3), block=512), 2)  # replica 2: 4 blocks in cpu
    router = make_router("dynamo-kv", kv_block_size=512)
    router.bind([None] * 3, kv)
    view = cluster([rv(0), rv(1), rv(2)])
    # overlap: replica 0 none; replica 1: 0.75 x 4 + 0.25 x 4 = 4; replica 2: 0.75 x 4 = 3;
    # cost = prefill blocks (8 - overlap) + decode blocks (0 in use + floor of the prefill blocks)
    assert router.costs(r, view) == [16.0, 4.0 + 4, 5.0 + 5]
    assert router.route(r, view) == 1
    flat = make_router("dynamo-kv", kv_block_size=512, host_cache_hit_weight=0.0, disk_cache_hit_weight=0.0)
    flat.bind([None] * 3, kv)
    assert flat.costs(r, view) == [16.0, 16.0, 16.0]


@cache
def _mooncake(*sets: str) -> dict:
    return simulate(load_scenario(ROOT / "examples/mooncake-pd.yaml", [
        "workload.trace.end_s=300", "gpu=h100-sxm", "perf.kv_cache_dtype=auto", H100_POOLS, *sets])).summary()


H100_POOLS = "pools=[{name: prefill, role: prefill, replicas: 2}, {name: decode, role: decode, replicas: 3}]"


def test_a_cluster_store_cuts_ttft_when_gpu_caches_are_small():
    """Mooncake trace on 2 prefill + 3 decode H100s with BF16 KV (each prefix cache holds ~0.4M
    tokens; the prefill pool ~80% busy): the store turns recomputed prefixes into loads."""
    without, with_store = _mooncake(), _mooncake("kv_store.enabled=true")
    assert with_store["prefix_cache_hit_rate"] > 3 * without["prefix_cache_hit_rate"]
    assert with_store["ttft_s"]["mean"] < 0.7 * without["ttft_s"]["mean"]
    assert with_store["ttft_s"]["p90"] < 0.8 * without["ttft_s"]["p90"]
    busy = [s["disaggregation"]["busy_share_by_role"]["prefill"] for s in (without, with_store)]
    assert busy[1] < 0.9 * busy[0]  # less prefill work
    tiers = with_store["kv_store"]["tiers"]
    assert tiers["cpu"]["hit_blocks"] > 0 and tiers["disk"]["hit_blocks"] > 0
    assert tiers["cpu"]["evicted_blocks"] > 0  # the cpu tier filled and spilled to disk


def test_store_loads_are_exact_under_fast_forward():
    from tests.cluster.helpers import assert_same_steps, outcome

    sets = ["workload.trace.end_s=120", "gpu=h100-sxm", "perf.kv_cache_dtype=auto", "kv_store.enabled=true",
            "engine.gpu_memory_utilization=0.4",
            "kv_store.tiers=[{name: cpu, capacity_gb: 20}, {name: disk, capacity_gb: 100, load_bandwidth_GBps: 5}]"]
    fast, slow = (simulate(load_scenario(ROOT / "examples/mooncake-pd.yaml", sets + [f"engine.fast_forward={ff}"]),
                           keep_steps=True) for ff in ("true", "false"))
    assert fast.summary()["kv_store"]["num_loads"] > 0
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)


@pytest.mark.parametrize(("example", "sets"), [
    ("mooncake.yaml", ["workload.num_requests=200", "workload.trace.speedup=1", "replicas=3", "router.name=random"]),
    ("sessions.yaml", ["workload.num_requests=150", "workload.arrival.rate_per_s=4", "engine.enable_prefix_caching=false"]),
])
def test_finishes_write_to_the_store_at_their_time_under_fast_forward(example, sets):
    """A finish writes its prompt's blocks to the store at once, which the next dispatch to any
    replica reads: a finish inside a fast-forwarded stretch is told at its time. (The store was
    written when the stretch was applied: Mooncake requests dispatched to another replica
    meanwhile missed blocks in the store, and with prefix caching off so did a session's next
    turn on the same replica.)"""
    from tests.cluster.helpers import outcome

    fast, slow = (simulate(load_scenario(ROOT / "examples" / example, sets + ["kv_store.enabled=true",
                                                                          f"engine.fast_forward={ff}"]))
                  for ff in ("true", "false"))
    assert fast.summary()["kv_store"]["num_loads"] > 0
    assert outcome(fast) == outcome(slow)
    assert fast.summary() | {"wall_time_s": 0} == slow.summary() | {"wall_time_s": 0}
    assert fast.num_fast_forwarded_steps > 0.5 * fast.summary()["num_steps"]  # (fast-forward ran)


@pytest.mark.parametrize(("sets", "message"), [
    (["kv_store.tiers=[]"], "kv_store.tiers: List should have at least 1 item"),
    (["kv_store.tiers=[{name: cpu}, {name: cpu}]"], "each tier name once .got cpu, cpu; allowed: cpu, disk"),
    (["kv_store.tiers=[{name: cpu, load_bandwidth_GBps: 0}]"], "load_bandwidth_GBps: Input should be greater than 0"),
    (["disaggregation.rejection=early"], "disaggregation.rejection acts on prefill/decode pools"),
    (["disaggregation.overflow=splitwise"], "disaggregation.overflow acts on prefill/decode pools"),
])
def test_bad_store_and_admission_settings_are_refused_in_one_line(sets, message):
    from servesim.errors import InputError

    with pytest.raises(InputError, match=message):
        load_scenario(None, sets)
