"""chunk_verify_time_fn: the scalar form of a step of one prompt chunk beside speculative
verify chunks is bit-identical to step_time_s (the speculative chunk stretches of
replica/spec_stretch.py price with it)."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.perf import PerfConfig, build_perf_model


@pytest.mark.parametrize("model,gpu,tp,engine", [("llama-3.1-8b", "h100-sxm", 1, "vllm"),
                                                  ("llama-3.1-70b", "h100-sxm", 8, "vllm"),
                                                  ("llama-3.1-70b", "a100-80gb", 4, "trtllm"),
                                                  ("qwen3-30b-a3b", "h100-sxm", 1, "sglang"),
                                                  ("deepseek-v3", "h200", 8, "vllm")])
def test_chunk_verify_time_fn_equals_step_time(model, gpu, tp, engine):
    perf = build_perf_model(model, gpu, tp, config=PerfConfig(engine=engine))
    rng = np.random.default_rng(0)
    for n, t, chunk in ((1, 4, 511), (3, 4, 509), (13, 2, 499), (64, 6, 448), (300, 4, 1748)):
        f = perf.chunk_verify_time_fn(n, t, chunk)
        assert f is perf.chunk_verify_time_fn(n, t, chunk)  # (memoised)
        for _ in range(20):
            ctx = [int(x) for x in rng.integers(1, 60_000, n)]
            cached = int(rng.integers(0, 120_000))
            assert f(cached, sum(ctx)) == perf.step_time_s([(chunk, cached)] + [(t, c) for c in ctx], [], n)  # exact


def test_pair_sums_past_exact_floats_and_sliding_windows_have_no_form():
    perf = build_perf_model("llama-3.1-8b", "h100-sxm")
    assert perf.chunk_verify_time_fn(2, 4, 100)(0, 1 << 50) is None
    assert perf.chunk_verify_time_fn(2, 4, 100)(1 << 45, 100) is None
    assert build_perf_model("mistral-7b", "a100-80gb").chunk_verify_time_fn(2, 4, 100) is None
