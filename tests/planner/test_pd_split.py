"""DistServe's headline, qualitatively: with a strict TPOT SLO, splitting prefill and decode
raises per-GPU goodput on long prompts (prefills no longer stall decodes) and lowers it on short
ones (a lone decode replica saturates while the prefill replica idles). Two H100s, Llama-3.1-8B."""

from __future__ import annotations

import pytest

from servesim.planner.pd_split import pd_splits, pools_override, search_pd_split
from servesim.errors import InputError


def _base(prompt: int) -> list[str]:
    return ["workload.trace=null", "workload.arrival.process=poisson", "workload.num_requests=300",
            f"workload.lengths.prompt_tokens={prompt}", "workload.lengths.output_tokens=200",
            "slo.ttft_s=1.0", "slo.tpot_s=0.012"]


def _by_label(results):
    return {r.label: r for r in results}


def test_disaggregation_wins_on_long_prompts_at_a_strict_tpot_slo():
    res = _by_label(search_pd_split(_base(4000), 2, [8.0]))
    assert res["1P1D"].goodput_per_gpu > 5 * res["colocated"].goodput_per_gpu
    assert res["1P1D"].slo_attainment > 0.8 > 0.2 > res["colocated"].slo_attainment


def test_colocation_wins_on_short_prompts():
    res = search_pd_split(_base(200), 2, [60.0])
    assert res[0].label == "colocated"
    by = _by_label(res)
    assert by["colocated"].slo_attainment == 1.0 and by["1P1D"].slo_attainment < 0.9


def test_splits_and_empty_pools():
    assert pd_splits(3) == [(0, 0), (1, 2), (2, 1)]
    with pytest.raises(InputError, match="leaves a pool empty"):
        pools_override(2, 0, 2)
    with pytest.raises(InputError, match="at least 2 replicas"):
        pd_splits(1)
