"""chunk_time_fn: the scalar form of a step of one prompt chunk beside decodes is bit-identical
to step_time_s (the chunk stretches of replica/chunk_stretch.py price with it)."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.perf import PerfConfig, build_perf_model


@pytest.mark.parametrize("model,gpu,tp,engine", [("llama-3.1-8b", "h100-sxm", 1, "vllm"),
                                                  ("llama-3.1-70b", "h100-sxm", 8, "vllm"),
                                                  ("llama-3.1-70b", "a100-80gb", 4, "trtllm"),
                                                  ("qwen3-30b-a3b", "h100-sxm", 1, "sglang"),
                                                  ("deepseek-v3", "h200", 8, "vllm")])
def test_chunk_time_fn_equals_step_time(model, gpu, tp, engine):
    perf = build_perf_model(model, gpu, tp, config=PerfConfig(engine=engine))
    rng = np.random.default_rng(0)
    for n, chunk in ((0, 512), (1, 511), (13, 499), (64, 448), (300, 1748)):
        f = perf.chunk_time_fn(n, chunk)
        for _ in range(20):
            ctx = [int(x) for x in rng.integers(1, 60_000, n)]
            cached = int(rng.integers(0, 120_000))
            assert f(cached, sum(ctx)) == perf.step_time_s([(chunk, cached)], ctx)  # exact, not approximate


def test_sliding_window_models_have_no_chunk_form():
    assert build_perf_model("mistral-7b", "a100-80gb").chunk_time_fn(4, 100) is None
