"""The plan schema: candidates are the cross product; what cannot be simulated yet is refused by name."""

from __future__ import annotations

import pytest

from servesim.errors import InputError
from servesim.planner.plan import parse_plan, with_prices
from servesim.planner.space import SpaceConfig, expand, parse_ratio
from tests.planner.helpers import small_plan


def test_cross_product_in_fixed_order_with_labels():
    cands = expand(SpaceConfig(gpu=["h100-sxm", "l40s"], tp=[1, 2], max_num_seqs=[64, None]))
    assert len(cands) == 8
    assert [c.label for c in cands[:3]] == ["h100-sxm tp1 seqs=64 vllm round-robin", "h100-sxm tp1 vllm round-robin",
                                            "h100-sxm tp2 seqs=64 vllm round-robin"]
    assert cands[-1].gpu == "l40s" and cands[-1].tp == 2 and cands[-1].max_num_seqs is None
    assert all(c.replicas is None for c in cands)  # replicas: auto


def test_fixed_replicas_and_gpus_per_replica():
    cands = expand(SpaceConfig(tp=[4], replicas=[1, 3]))
    assert [(c.replicas, c.gpus_per_replica) for c in cands] == [(1, 4), (3, 4)]
    assert cands[0].label == "h100-sxm tp4 x1 vllm"  # one replica needs no router


@pytest.mark.parametrize("space, message", [
    ({"mode": ["aggregated", "disaggregated"]}, "disaggregated is not yet supported"),
    ({"pp": [1, 2]}, "pipeline parallelism is not yet simulated"),
    ({"gpu": []}, "the search space is empty"),
    ({"tp": [1, 1]}, "lists a value twice"),
])
def test_unsupported_or_empty_spaces_are_refused(space, message):
    with pytest.raises(InputError, match=message):
        expand(SpaceConfig(**space))


def test_ratio_form():
    assert parse_ratio("1:2") == (1, 2)
    with pytest.raises(ValueError, match="P:D"):
        parse_ratio("2")


def test_plan_errors_name_the_problem():
    with pytest.raises(InputError, match="unknown field 'space.gpus'; allowed: gpu, tp"):
        parse_plan(small_plan(space={"gpus": ["h100-sxm"]}))
    with pytest.raises(InputError, match="objective cost needs traffic.rate_per_s"):
        parse_plan(small_plan(traffic={}))
    plan = small_plan()
    plan["scenario"]["slo"] = {}
    with pytest.raises(InputError, match="goodput needs an SLO"):
        parse_plan(plan)


def test_prices_from_the_catalogue_or_the_plan():
    cands = with_prices(expand(SpaceConfig(gpu=["H100", {"name": "l40s", "price_usd_h": 0.5}])), "cost")
    assert [(c.gpu, c.price_usd_h) for c in cands] == [("h100-sxm", 2.49), ("l40s", 0.5)]
    with pytest.raises(InputError, match="GPU l40s has no price and the objective is cost"):
        with_prices(expand(SpaceConfig(gpu=[{"name": "l40s", "price_usd_h": 0}])), "cost")
    free = with_prices(expand(SpaceConfig(gpu=[{"name": "l40s", "price_usd_h": 0}])), "goodput_per_gpu")
    assert free[0].price_usd_h is None


def test_probe_size_is_set_on_the_base():
    plan, base = parse_plan(small_plan())
    assert base["workload"]["num_requests"] == 200 and plan.goodput.target == 0.9
