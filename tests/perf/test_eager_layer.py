"""eager_layer_s: time per layer of a step with prompt tokens (run outside CUDA graphs), off by default."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.errors import InputError
from servesim.perf import build_perf_model
from servesim.perf.config import PerfConfig

LAYERS = 32  # llama-3.1-8b


def _model(engine: str = "vllm", **overrides):
    return build_perf_model("llama-3.1-8b", "h100-sxm", 1, "bf16", PerfConfig(engine=engine, overrides=overrides))


def test_off_by_default_and_zero_changes_nothing_bit_for_bit():
    plain = _model()
    assert plain.constants.eager_layer_s == 0.0
    zero = _model(eager_layer_s=0.0)
    for prefills, decodes in (([], [1000] * 64), ([(2048, 0)], [500] * 7), ([(8, 100)] * 4, [])):
        assert zero.step_time_s(prefills, decodes) == plain.step_time_s(prefills, decodes)


@pytest.mark.parametrize("engine", ["vllm", "sglang"])  # additive CPU, and CPU overlapped (a GPU-side term)
def test_steps_with_prompt_tokens_pay_it_once_per_layer_decodes_never(engine):
    base = _model(engine, step_overhead_s=0.0, seq_overhead_s=0.0)
    eager = _model(engine, step_overhead_s=0.0, seq_overhead_s=0.0, eager_layer_s=0.5e-3)
    assert eager.step_time_s([], [1024] * 64) == base.step_time_s([], [1024] * 64)
    for prefills, decodes in (([(1024, 0)], []), ([(4096, 0)], [800] * 9), ([(512, 0), (512, 100)], [300] * 3)):
        diff = eager.step_time_s(prefills, decodes) - base.step_time_s(prefills, decodes)
        assert diff == pytest.approx(LAYERS * 0.5e-3, rel=1e-9)
    # Reported beside the element-wise work, not as attention.
    b, e = base.step_breakdown([(1024, 0)], []), eager.step_breakdown([(1024, 0)], [])
    assert e.attention_s == b.attention_s
    assert e.other_s - b.other_s == pytest.approx(LAYERS * 0.5e-3, rel=1e-9)


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_fast_paths_stay_bit_identical_with_the_term_on(engine):
    pm = _model(engine, eager_layer_s=0.3e-3)
    fn = pm.chunk_time_fn(12, 2048)
    ctxs = [700, 900, 1100] * 4
    assert fn(4096, sum(ctxs)) == pm.step_time_s([(2048, 4096)], ctxs)
    verify = pm.verify_step_times_s(8, 4, np.array([8 * 700]))
    assert verify[0] == pm.step_time_s([(4, 700)] * 8, [], 8)
    assert pm.verify_time_fn(8, 4)(8 * 700) == pm.step_time_s([(4, 700)] * 8, [], 8)
    assert pm.step_breakdown([(2048, 0)], ctxs).total_s == pm.step_time_s([(2048, 0)], ctxs)


def test_negative_values_are_refused():
    with pytest.raises(InputError, match="constant 'eager_layer_s' must be"):
        _model(eager_layer_s=-1e-6)
