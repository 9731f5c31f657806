"""decode_time_fn: the scalar fast path of decode-only step times is bit-identical to step_time_s."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.perf import build_perf_model


@pytest.mark.parametrize("model,gpu,tp,engine", [("llama-3.1-8b", "h100-sxm", 1, "vllm"),
                                                  ("llama-3.1-70b", "a100-80gb", 4, "trtllm"),
                                                  ("qwen3-30b-a3b", "h100-sxm", 1, "sglang"),
                                                  ("deepseek-v3", "h200", 8, "vllm")])
def test_decode_time_fn_equals_step_time(model, gpu, tp, engine):
    from servesim.perf import PerfConfig

    perf = build_perf_model(model, gpu, tp, config=PerfConfig(engine=engine))
    rng = np.random.default_rng(0)
    for n in (1, 7, 64, 513):
        f = perf.decode_time_fn(n)
        for _ in range(20):
            ctx = [int(x) for x in rng.integers(1, 60_000, n)]
            assert f(sum(ctx)) == perf.step_time_s([], ctx)  # exact, not approximate


def test_sliding_window_models_have_no_scalar_form():
    assert build_perf_model("mistral-7b", "a100-80gb").decode_time_fn(4) is None
