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


@pytest.mark.parametrize("model,gpu,tp,engine,overrides", [
    ("llama-3.1-8b", "h100-sxm", 1, "vllm", {}),
    ("llama-3.1-70b", "h100-sxm", 8, "vllm", {}),
    ("qwen3-30b-a3b", "h100-sxm", 1, "sglang", {}),
    ("deepseek-v3", "h200", 8, "trtllm", {}),
    ("llama-3.1-8b", "h100-sxm", 1, "vllm",  # (every prompt-only term on: a joining prompt's pass)
     {"mixed_prefill_slowdown": 0.3, "prompt_token_gpu_s": 3e-6, "eager_layer_s": 1e-5})])
def test_verify_sums_time_fn_equals_step_time(model, gpu, tp, engine, overrides):
    """Any speculative step from its sums: verify chunks of 1 + k tokens and shorter ones (k or
    fewer tokens left), plain decodes on their last token, prompts first: bit for bit
    step_time_s of the lists, as `SpecStretchPricing._verify_s` calls it."""
    perf = build_perf_model(model, gpu, tp, config=PerfConfig(engine=engine, overrides=overrides))
    f = perf.verify_sums_time_fn()
    assert f is not None and f is perf.verify_sums_time_fn()  # (memoised)
    rng = np.random.default_rng(1)
    for _ in range(300):
        prompts = [(int(n), int(c)) for n, c in zip(rng.integers(1, 3000, rng.integers(0, 3)),
                                                     rng.integers(0, 50_000, 3))]
        verify = [(int(t), int(c)) for t, c in zip(rng.integers(2, 6, rng.integers(1, 40)), rng.integers(1, 60_000, 40))]
        plain = [int(c) for c in rng.integers(1, 60_000, rng.integers(0, 4))]
        chunks = prompts + verify
        want = perf.step_time_s(chunks, plain, len(verify))
        got = f(len(chunks) + len(plain), sum(n for n, _ in chunks) + len(plain), sum(n * (2 * c + n) for n, c in chunks),
                sum(c for _, c in chunks), sum(plain), sum(n for n, _ in prompts))
        assert got == want  # exact


def test_verify_sums_past_exact_floats_and_where_no_form():
    assert build_perf_model("llama-3.1-8b", "h100-sxm").verify_sums_time_fn()(2, 8, 1 << 52, 0, 0) is None
    assert build_perf_model("mistral-7b", "a100-80gb").verify_sums_time_fn() is None  # (sliding windows)
