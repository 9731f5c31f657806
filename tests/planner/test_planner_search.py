"""Configuration search: the same pick as exhaustive simulation, with fewer simulations; the cache."""

from __future__ import annotations

import pytest

from servesim.errors import InputError
from servesim.planner.cache import ProbeCache
from servesim.planner.executors import LocalExecutor
from servesim.planner.output import rows
from servesim.planner.plan import parse_plan
from servesim.planner.search import run_search
from tests.planner.helpers import small_plan

EXHAUSTIVE = {"keep_ratio": 0.0, "early_stop": False}


def search(plan_dict, cache=None):
    plan, base = parse_plan(plan_dict)
    return run_search(plan, base, LocalExecutor(1), cache if cache is not None else ProbeCache())


@pytest.mark.parametrize("objective", ["cost", "goodput_per_gpu"])
def test_search_finds_the_exhaustive_best_with_fewer_simulations(objective):
    full = search(small_plan(search={"objective": objective, **EXHAUSTIVE}))
    fast = search(small_plan(search={"objective": objective, "wave_size": 2}))
    assert full.best is not None and fast.best is not None
    assert fast.best.cand == full.best.cand
    assert fast.best.capacity_per_s == pytest.approx(full.best.capacity_per_s, rel=0.1)
    assert fast.counters.probes_run < full.counters.probes_run
    statuses = [e.status for e in fast.ranked]
    assert any(s.startswith("pruned: cannot beat") or s.startswith("pruned: static") for s in statuses)


def test_cost_objective_sizes_replicas_to_the_traffic():
    result = search(small_plan())
    for e in result.ranked:
        if e.status == "ok":
            assert e.capacity_per_s >= 12.0 > e.capacity_per_s - e.goodput.goodput_per_s
            assert e.cost_usd_h == pytest.approx(e.replicas * e.cand.price_usd_h)
    costs = [e.cost_usd_h for e in result.ranked if e.status == "ok"]
    assert costs == sorted(costs)


def test_rerun_and_widened_search_simulate_nothing_twice(tmp_path):
    path = tmp_path / "cache.jsonl"
    narrow = small_plan(space={"gpu": ["h100-sxm", "a100-80gb"], "max_num_seqs": [128]})
    first = search(narrow, ProbeCache(path))
    again = search(narrow, ProbeCache(path))
    assert first.counters.probes_run > 0 and again.counters.probes_run == 0
    assert rows(again) == rows(first)
    wide = search(small_plan(space={"gpu": ["h100-sxm", "a100-80gb", "l40s"], "max_num_seqs": [128]}),
                  ProbeCache(path))
    assert wide.counters.probes_cached >= first.counters.probes_run  # the old candidates come from the cache
    assert {r["candidate"]: r["goodput_per_s"] for r in rows(first)}.items() <= \
        {r["candidate"]: r["goodput_per_s"] for r in rows(wide)}.items()


def test_cache_survives_a_line_cut_short(tmp_path):
    path = tmp_path / "cache.jsonl"
    cache = ProbeCache(path)
    cache.put("a", {"slo_attainment": 1.0})
    cache.close()
    with open(path, "a") as f:
        f.write('{"key": "b", "summ')  # interrupted mid-write
    cache = ProbeCache(path)
    assert len(cache) == 1
    cache.put("c", {"slo_attainment": 0.5})
    cache.close()
    assert len(ProbeCache(path)) == 2


def test_static_pick_ignores_queueing():
    result = search(small_plan())
    pick = result.static_pick
    assert pick is not None and pick.status == "ok"
    assert pick.capacity_per_s == pytest.approx(pick.replicas * pick.static.capacity_per_s)


def test_unreachable_slo_and_nothing_fitting_are_input_errors():
    with pytest.raises(InputError, match="no candidate can meet the SLO even unloaded"):
        search(small_plan(slo={"ttft_s": 0.001, "tpot_s": 0.05}))
    plan = small_plan(space={"gpu": ["l40s"]})
    plan["scenario"]["model"] = "llama-3.1-70b"
    with pytest.raises(InputError, match="no candidate fits in memory"):
        search(plan)


def test_no_candidate_meeting_fixed_traffic_is_a_normal_result():
    result = search(small_plan(traffic={"rate_per_s": 500.0}, space={"gpu": ["l40s"], "replicas": [1]}))
    assert result.best is None
    assert [e.status for e in result.ranked] == ["misses traffic"]
    assert result.ranked[0].capacity_per_s > 0


def test_interrupted_search_resumes_with_only_the_missing_simulations(tmp_path):
    path = tmp_path / "cache.jsonl"
    plan = small_plan(space={"gpu": ["h100-sxm", "a100-80gb"], "max_num_seqs": [32, 128]})
    full = search(plan, ProbeCache(path))
    lines = path.read_text().splitlines()
    kept = len(lines) // 2
    path.write_text("\n".join(lines[:kept]) + "\n" + lines[kept][:20])  # killed mid-write
    resumed = search(plan, ProbeCache(path))
    assert resumed.counters.probes_run == len(lines) - kept
    assert rows(resumed) == rows(full)
