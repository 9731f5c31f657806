"""prompt_token_gpu_s: a GPU time per prompt token of a step, the same for every model and TP (off by
default); decode and verify steps do not pay it."""

from __future__ import annotations

import pytest

from servesim.perf import build_perf_model
from servesim.perf.config import PerfConfig
from tests.perf.test_act_quant import assert_fast_paths_price_as_step_time

RATE_S = 1.2e-05


def _model(model: str = "deepseek-v3", tp: int = 8, **overrides):
    return build_perf_model(model, "b200", tp, "fp8", PerfConfig(engine="sglang", overrides=overrides))


@pytest.mark.parametrize("prefills, decodes", [([], [1000] * 64), ([(8192, 0)], [500] * 7), ([(1024, 0)] * 4, []), ([(300, 64)], [90])])
def test_off_by_default_and_zero_changes_nothing_bit_for_bit(prefills, decodes):
    plain, zero = _model(), _model(prompt_token_gpu_s=0.0)
    assert plain.constants.prompt_token_gpu_s == 0.0 and plain.terms.prompt_token_gpu_s() == 0.0
    assert zero.step_time_s(prefills, decodes) == plain.step_time_s(prefills, decodes)


@pytest.mark.parametrize("model, tp", [("deepseek-v3", 8), ("deepseek-v3", 4), ("llama-3.1-8b", 1)])
def test_every_prompt_token_pays_the_same_whatever_the_model_and_tp(model, tp):
    base, priced = _model(model, tp), _model(model, tp, prompt_token_gpu_s=RATE_S)
    assert priced.step_time_s([], [1024] * 128) == base.step_time_s([], [1024] * 128)  # decodes: bit for bit
    for prefills, decodes, prompt in (([(8192, 0)], [], 8192), ([(1024, 0)] * 7, [900] * 5, 7168), ([(512, 3000)], [40], 512)):
        diff = priced.step_time_s(prefills, decodes) - base.step_time_s(prefills, decodes)
        assert diff == pytest.approx(RATE_S * prompt, rel=1e-6)
    b, q = base.step_breakdown([(8192, 0)], [700] * 4), priced.step_breakdown([(8192, 0)], [700] * 4)
    assert q.other_s - b.other_s == pytest.approx(RATE_S * 8192, rel=1e-9)
    assert q.linear_s == b.linear_s and q.total_s == priced.step_time_s([(8192, 0)], [700] * 4)


def test_fast_paths_stay_bit_identical_and_verify_chunks_do_not_pay():
    pm, base = _model(prompt_token_gpu_s=RATE_S), _model()
    assert_fast_paths_price_as_step_time(pm)
    assert pm.step_time_s([(3, 1000)] * 4, [], 4) == base.step_time_s([(3, 1000)] * 4, [], 4)
