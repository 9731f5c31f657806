"""Executors: worker processes and a Ray cluster return exactly what one process returns."""

from __future__ import annotations

import pytest

from servesim.errors import InputError
from servesim.planner.cache import ProbeCache
from servesim.planner.executors import LocalExecutor, RayExecutor, make_executor
from servesim.planner.output import rows
from servesim.planner.plan import parse_plan
from servesim.planner.search import run_search
from tests.planner.helpers import small_plan

PLAN = small_plan(space={"gpu": ["h100-sxm", "a100-80gb"], "max_num_seqs": [32, 128]}, search={"wave_size": 2})


def plan_rows(executor):
    plan, base = parse_plan(PLAN)
    try:
        return rows(run_search(plan, base, executor, ProbeCache()))
    finally:
        executor.close()


def square(x: int) -> int:
    return x * x


def test_local_map_keeps_input_order_and_reports_each_result():
    seen = []
    ex = LocalExecutor(2)
    try:
        assert ex.map(square, [3, 1, 2], lambda i, r: seen.append((i, r))) == [9, 1, 4]
    finally:
        ex.close()
    assert sorted(seen) == [(0, 9), (1, 1), (2, 4)]


def test_worker_processes_match_one_process():
    assert plan_rows(LocalExecutor(2)) == plan_rows(LocalExecutor(1))


def test_ray_matches_the_local_executor():
    ray = pytest.importorskip("ray")
    expected = plan_rows(LocalExecutor(1))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert plan_rows(RayExecutor()) == expected
    finally:
        ray.shutdown()


def test_executor_choice_errors():
    with pytest.raises(InputError, match="unknown executor 'dask'; allowed: local, ray"):
        make_executor("dask")
    with pytest.raises(InputError, match="--address applies to --executor ray only"):
        make_executor("local", address="ray://head:10001")
    with pytest.raises(InputError, match="--jobs must be >= 1"):
        make_executor("local", jobs=0)
