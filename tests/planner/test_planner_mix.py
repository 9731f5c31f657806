"""Mélange mix: the integer program's optimum on hand-checkable cases, then a simulated check."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.planner import plan
from servesim.planner.mix import solve_mix, write_pool_trace
from servesim.planner.space import MixBucket
from tests.planner.helpers import small_plan


def test_cheap_type_takes_the_small_requests_and_the_big_type_the_large():
    # type 0: cheap, fast on short requests, useless on long; type 1: dear, serves both
    cap = np.array([[10.0, 12.0], [0.0, 4.0]])
    counts, served = solve_mix(np.array([20.0, 4.0]), cap, np.array([1.0, 3.0]), slice_factor=2)
    assert counts.tolist() == [2, 1]  # cost 5; all on type 1 would need ceil(20/12 + 4/4) = 3 -> 9
    assert served.tolist() == [[20.0, 0.0], [0.0, 4.0]]


def test_slices_split_a_bucket_across_types():
    cap = np.array([[10.0, 10.0]])
    counts, served = solve_mix(np.array([15.0]), cap, np.array([1.0, 1.2]), slice_factor=3)
    assert counts.tolist() == [2, 0] and served.tolist() == [[15.0, 0.0]]
    counts, served = solve_mix(np.array([15.0]), np.array([[10.0, 5.0]]), np.array([2.0, 1.0]), slice_factor=3)
    assert counts @ np.array([2.0, 1.0]) == 3.0  # one of each: 10 + 5 req/s for $3 beats 2 x $2
    assert served.sum() == pytest.approx(15.0)


def test_a_bucket_no_type_can_serve_makes_the_mix_infeasible():
    assert solve_mix(np.array([1.0, 1.0]), np.array([[1.0, 2.0], [0.0, 0.0]]), np.array([1.0, 1.0]), 2) is None


def test_pool_trace_merges_the_buckets_at_their_rates(tmp_path):
    buckets = [MixBucket(name="s", share=1, prompt_tokens=100, output_tokens=[10, 20]),
               MixBucket(name="l", share=1, prompt_tokens=4000, output_tokens=300)]
    total = write_pool_trace(tmp_path / "p.csv", buckets, [3.0, 1.0], 400, seed=1)
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert total == 4.0 and lines[0] == "arrival_s,prompt_len,output_len" and len(lines) == 401
    prompts = [int(x.split(",")[1]) for x in lines[1:]]
    assert prompts.count(100) == 300 and prompts.count(4000) == 100
    times = [float(x.split(",")[0]) for x in lines[1:]]
    assert times == sorted(times)


def test_planned_mix_is_verified_by_simulation(tmp_path):
    import yaml

    p = small_plan(space={"gpu": ["h100-sxm", "l40s"]},
                   mix={"rate_per_s": 20.0, "slice_factor": 2,
                        "buckets": [{"name": "short", "share": 0.8, "prompt_tokens": [100, 300], "output_tokens": 100},
                                    {"name": "long", "share": 0.2, "prompt_tokens": 3000, "output_tokens": 200}]})
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(p))
    outcome = plan(tmp_path / "plan.yaml", tmp_path / "out", jobs=1)
    mix = outcome.mix
    assert mix.cost_usd_h is not None and mix.cost_usd_h <= mix.best_single[2]
    assert set(mix.verified) == {t for t, n in mix.counts.items() if n}
    assert all(a >= 0.9 for a in mix.verified.values())
    assert "mix.yaml" in outcome.files
