"""gdn_compile_s: a fixed time per step with prompt tokens for models with Gated DeltaNet layers
(SGLang's FLA l2norm kernel compiled again for each new token count), off by default."""

from __future__ import annotations

import pytest

from servesim.perf import build_perf_model
from servesim.perf.config import PerfConfig
from servesim.perf.models import model_spec as get_model


def _model(name: str, **overrides):
    return build_perf_model(name, "h200", 8, "fp8", PerfConfig(engine="sglang", overrides=overrides))


def test_the_checkpoints_with_deltanet_layers_are_marked_stand_in_included():
    assert get_model("qwen3.5-397b-a17b").linear_attention is None  # the stand-in shape
    assert get_model("qwen3.5-397b-a17b").gated_deltanet
    assert get_model("qwen3.5-397b-a17b-gdn").gated_deltanet
    assert not get_model("deepseek-r1").gated_deltanet
    assert not get_model("llama-3.1-8b").gated_deltanet


@pytest.mark.parametrize("name", ["qwen3.5-397b-a17b", "qwen3.5-397b-a17b-gdn"])
def test_prefill_steps_pay_it_once_decodes_never(name):
    base, on = _model(name), _model(name, gdn_compile_s=0.1)
    assert base.constants.gdn_compile_s == 0.0
    assert on.step_time_s([], [1500] * 32) == base.step_time_s([], [1500] * 32)
    for prefills, decodes in (([(1024, 0)], []), ([(8192, 0)], [900] * 7), ([(1000, 0), (900, 0)], [300] * 3)):
        assert on.step_time_s(prefills, decodes) - base.step_time_s(prefills, decodes) == pytest.approx(0.1, rel=1e-9)


def test_other_models_keep_their_floats():
    for prefills, decodes in (([(1024, 0)], []), ([(4096, 0)], [800] * 9), ([], [1000] * 64)):
        assert (_model("deepseek-r1", gdn_compile_s=0.1).step_time_s(prefills, decodes)
                == _model("deepseek-r1").step_time_s(prefills, decodes))


def test_fast_paths_stay_bit_identical_with_the_term_on():
    pm = _model("qwen3.5-397b-a17b-gdn", gdn_compile_s=0.1)  # (the hybrid entry has the fast paths)
    ctxs = [700, 900, 1100] * 4
    n, cached = len(ctxs), 300
    assert pm.decode_time_fn(n)(sum(ctxs)) == pm.step_time_s([], ctxs)
    assert pm.chunk_time_fn(n, 512)(cached, sum(ctxs)) == pm.step_time_s([(512, cached)], ctxs)
    assert pm.verify_time_fn(n, 4)(sum(ctxs)) == pm.step_time_s([(4, c) for c in ctxs], [], n)
    assert pm.prompt_step_s(n, 700, sum(ctxs)) == pm.step_time_s([(700, 0)], ctxs)
    assert pm.step_breakdown([(2048, 0)], ctxs).total_s == pm.step_time_s([(2048, 0)], ctxs)
