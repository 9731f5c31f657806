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


def test_chunk_time_fn_is_memoised_and_its_memo_bounded(monkeypatch):
    # (a Sarathi arrival joining with chunks asks for the same (decodes, chunk) forms at every
    # join: built once; callers asking for arbitrary prompt lengths empty the memo, not grow it)
    from servesim.perf import chunk_forms

    perf = build_perf_model("llama-3.1-8b", "h100-sxm")
    f = perf.chunk_time_fn(13, 499)
    assert perf.chunk_time_fn(13, 499) is f and perf.chunk_time_fn(13, 498) is not f
    monkeypatch.setattr(chunk_forms, "CHUNK_FNS", 8)
    for chunk in range(1, 30):
        g = perf.chunk_time_fn(5, chunk)
        assert g(100, 700) == perf.step_time_s([(chunk, 100)], [140] * 5)
        assert 1 <= len(perf._chunk_fns) <= 8
    sliding = build_perf_model("mistral-7b", "a100-80gb")
    assert sliding.chunk_time_fn(4, 100) is None and sliding.chunk_time_fn(4, 100) is None  # (a memoised None)


def test_sliding_window_models_have_no_chunk_form():
    assert build_perf_model("mistral-7b", "a100-80gb").chunk_time_fn(4, 100) is None
    assert build_perf_model("mistral-7b", "a100-80gb").prompt_step_s(4, 100, 400) is None


@pytest.mark.parametrize("model,gpu,tp,engine,mixed,eager", [("llama-3.1-8b", "h100-sxm", 1, "vllm", 0.0, 0.0),
                                                             ("llama-3.1-8b", "h100-sxm", 1, "vllm", 0.3, 2e-5),
                                                             ("llama-3.1-70b", "a100-80gb", 4, "trtllm", 0.0, 0.0),
                                                             ("deepseek-v3", "h200", 8, "sglang", 0.2, 0.0)])
def test_prompt_step_s_equals_the_chunk_form(model, gpu, tp, engine, mixed, eager):
    # (an arrival joining a stretch is priced by prompt_step_s: bit-identical to the form and
    # to step_time_s, with the mixed-step slowdown and eager launches on or off, uncached or past
    # its prefix hits: a conversation's next turn)
    perf = build_perf_model(model, gpu, tp, config=PerfConfig(engine=engine, overrides={"mixed_prefill_slowdown": mixed,
                                                                                "eager_layer_s": eager}))
    rng = np.random.default_rng(1)
    for n, prompt in ((0, 512), (1, 7), (13, 499), (44, 1), (300, 1748)):
        for cached in (0, 16, 4096, int(rng.integers(1, 120_000))):
            for _ in range(20):
                ctx = [int(x) for x in rng.integers(1, 60_000, n)]
                t = perf.prompt_step_s(n, prompt, sum(ctx), cached)
                assert t == perf.chunk_time_fn(n, prompt)(cached, sum(ctx)) == perf.step_time_s([(prompt, cached)], ctx)
    assert perf.prompt_step_s(4, 0, 100) is None


@pytest.mark.parametrize("model,gpu,tp,engine,mixed,eager", [("llama-3.1-8b", "h100-sxm", 1, "vllm", 0.0, 0.0),
                                                             ("llama-3.1-8b", "h100-sxm", 1, "vllm", 0.3, 2e-5),
                                                             ("llama-3.1-70b", "a100-80gb", 4, "trtllm", 0.0, 0.0),
                                                             ("deepseek-v3", "h200", 8, "sglang", 0.2, 0.0)])
def test_prompts_step_s_equals_step_time(model, gpu, tp, engine, mixed, eager):
    # (a chained join's shared step, one prompt's last chunk and the next one's first beside the
    # decodes, is priced from the stretch's count and context sum: bit-identical to step_time_s)
    perf = build_perf_model(model, gpu, tp, config=PerfConfig(engine=engine, overrides={"mixed_prefill_slowdown": mixed,
                                                                                "eager_layer_s": eager}))
    rng = np.random.default_rng(2)
    for n, prefills in ((0, [(300, 900), (212, 0)]), (1, [(7, 1024), (504, 0)]), (13, [(250, 499), (249, 0)]),
                        (64, [(1, 60_000), (447, 0)]), (300, [(100, 5000)]), (5, [])):
        for _ in range(20):
            ctx = [int(x) for x in rng.integers(1, 60_000, n)]
            assert perf.prompts_step_s(prefills, n, sum(ctx)) == perf.step_time_s(prefills, ctx)  # exact
    assert perf.prompts_step_s([(4, 0)], 0, 0) == perf.step_time_s([(4, 0)], [])
    assert build_perf_model("mistral-7b", "a100-80gb").prompts_step_s([(4, 0), (5, 9)], 3, 100) is None


@pytest.mark.parametrize("model,gpu,tp,engine", [("llama-3.1-8b", "h100-sxm", 1, "vllm"),
                                                  ("llama-3.1-70b", "h100-sxm", 8, "vllm"),
                                                  ("qwen3-30b-a3b", "h100-sxm", 1, "sglang")])
def test_chunk_run_fn_prices_a_run_as_the_step_form_step_by_step(model, gpu, tp, engine):
    # A run of chunk steps priced in one call (sarathi's chunk stretches, sarsess31) ends each
    # step at the float `t += chunk_time_fn(n, chunk)(cached, ctx_sum)` gives, and stops at the
    # step cap or at the first end at or past the horizon, as the stretch's loop did.
    perf = build_perf_model(model, gpu, tp, config=PerfConfig(engine=engine))
    rng = np.random.default_rng(1)
    for n, chunk in ((0, 512), (3, 509), (40, 472), (200, 1848)):
        run, f = perf.chunk_run_fn(n, chunk), perf.chunk_time_fn(n, chunk)
        assert perf.chunk_run_fn(n, chunk) is run  # (memoised)
        for steps in (1, 7, 30):
            t0 = float(rng.uniform(0.0, 100.0))
            cached, ctx_sum = int(rng.integers(0, 100_000)), int(rng.integers(0, 500_000))
            want, t = [], t0
            for i in range(steps):
                t += f(cached + i * chunk, ctx_sum + i * n)
                want.append(t)
            ends = [-1.0]
            assert run(t0, cached, ctx_sum, steps, float("inf"), ends) == (steps, want[-1])
            assert ends == [-1.0] + want  # appended, bit for bit
            horizon = want[len(want) // 2]  # the steps that start before it: up to and including that end
            got = []
            taken, t_end = run(t0, cached, ctx_sum, steps, horizon, got)
            assert got == want[:len(want) // 2 + 1] and taken == len(got) and t_end == got[-1]
    assert build_perf_model("mistral-7b", "a100-80gb").chunk_run_fn(4, 100) is None
