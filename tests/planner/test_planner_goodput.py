"""Goodput bisection: brackets the threshold, stops early, agrees with a dense rate sweep."""

from __future__ import annotations

import math

import numpy as np
import pytest

from servesim.planner.goodput import bisect_goodput, probe_requests, run_probe, workload_shape
from servesim.planner.mapping import CLUSTER_KEYS, candidate_scenario
from servesim.planner.plan import parse_plan
from servesim.planner.space import SpaceConfig, expand
from tests.planner.helpers import small_plan


def run(search, attainment_at):
    rate = next(search)
    while True:
        try:
            rate = search.send(attainment_at(rate))
        except StopIteration as stop:
            return stop.value


def step(threshold):
    return lambda rate: 1.0 if rate <= threshold else 0.5


@pytest.mark.parametrize("guess", [0.3, 7.0, 40.0])
def test_brackets_the_threshold_within_the_tolerance(guess):
    g = run(bisect_goodput(guess, 0.9, 0.05, 20), step(7.3))
    assert g.goodput_per_s <= 7.3 < g.failing_per_s
    assert g.step_per_s <= 0.05 * g.failing_per_s
    assert not g.pruned and len(g.probes) <= 20


def test_early_stop_when_the_floor_fails():
    g = run(bisect_goodput(5.0, 0.9, 0.05, 20, floor_per_s=8.0), step(7.3))
    assert g.pruned and g.probes == [(8.0, 0.5)] and g.goodput_per_s == 0.0


def test_floor_that_passes_becomes_the_lower_bound():
    g = run(bisect_goodput(5.0, 0.9, 0.05, 20, floor_per_s=4.0), step(7.3))
    assert g.probes[0] == (4.0, 1.0) and g.probes[1][0] == 8.0  # next: twice the floor
    assert g.goodput_per_s <= 7.3 < g.failing_per_s


def test_nothing_passes_gives_zero_goodput_after_max_probes():
    g = run(bisect_goodput(5.0, 0.9, 0.05, 8), lambda rate: 0.0)
    assert g.goodput_per_s == 0.0 and len(g.probes) == 8


def test_probe_size_grows_with_the_rate():
    assert probe_requests(200, 10.0, 5.0) == 200
    assert probe_requests(200, 10.0, 35.5) == 355


def test_bisection_agrees_with_a_dense_sweep_within_one_step():
    plan, base = parse_plan(small_plan(goodput={"num_requests": 150, "min_duration_s": 0, "rel_tol": 0.1}))
    shape = workload_shape(base)
    cand = expand(SpaceConfig(gpu=["a100-80gb"], max_num_seqs=[32]))[0]

    def attainment(rate):
        return run_probe(candidate_scenario(base, cand, rate, shape.knob, 1, 150))["slo_attainment"]

    g = run(bisect_goodput(3.0, 0.9, 0.1, 12), attainment)
    rates = np.round(np.arange(0.5, 2.0 * g.failing_per_s, 0.25), 6)
    passing = [r for r in rates if attainment(float(r)) >= 0.9]
    dense = max(passing)  # the highest rate of the sweep that meets the target
    assert abs(dense - g.goodput_per_s) <= g.step_per_s + 0.25
    assert 1.0 < g.goodput_per_s < 40.0


def test_trace_rate_knob_is_the_speedup():
    plan, base = parse_plan(small_plan(scenario={"workload": {"trace": "azure-conv"}, "slo": {"ttft_s": 2.0}}))
    shape = workload_shape(base)
    assert shape.knob.kind == "trace" and 3.0 < shape.knob.natural_rate_per_s < 8.0
    cand = expand(SpaceConfig())[0]
    s = candidate_scenario(base, cand, 2 * shape.knob.natural_rate_per_s, shape.knob, 1)
    assert s["workload"]["trace"] == {"name": "azure-conv", "speedup": 2.0}
    two = candidate_scenario(base, cand, 2 * shape.knob.natural_rate_per_s, shape.knob, replicas=2)
    if CLUSTER_KEYS:  # the whole rate on two replicas behind the router
        assert two["replicas"] == 2 and two["workload"]["trace"]["speedup"] == pytest.approx(2.0)
    else:  # one replica's share until the cluster keys exist
        assert "replicas" not in two and two["workload"]["trace"]["speedup"] == pytest.approx(1.0)


def test_closed_loop_workloads_have_no_rate():
    plan = small_plan()
    plan["scenario"]["workload"]["arrival"] = {"process": "closed", "users": 4}
    from servesim.errors import InputError

    with pytest.raises(InputError, match="has no rate to search; allowed: poisson"):
        workload_shape(parse_plan(plan)[1])


def test_replica_count_is_resolved_exactly_on_the_traffic_grid():
    # threshold 3.4 req/s per replica, traffic 10: 3 replicas (3.33 each) suffice, 4 are not needed
    g = run(bisect_goodput(5.0, 0.9, 0.1, 20, traffic_per_s=10.0), step(3.4))
    assert math.ceil(10.0 / g.goodput_per_s - 1e-9) == 3
    assert g.goodput_per_s == pytest.approx(10.0 / 3)
    plain = run(bisect_goodput(5.0, 0.9, 0.1, 20), step(3.4))
    assert plain.goodput_per_s < 10.0 / 3  # the plain bracket alone would have asked for 4
