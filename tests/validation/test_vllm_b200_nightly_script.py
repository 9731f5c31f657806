"""The B200 MiniMax-M2.5 NVFP4 rows of vLLM's `nightly-5b8c30d62b754b57` build play the InferenceMAX script that ran
them (InferenceX pull request 996 at its commit of 2026-04-02: `vllm serve`'s 8,192-token budget, memory 0.95, blocks
of 32, FP8 KV cache, no capture size, the benchmark_serving client), and the build's prompt steps pay the launch time
of running without CUDA graphs (docs/fidelity-history.md, vblw)."""

from __future__ import annotations

import pytest

from servesim.validation.inferencemax import recipe
from servesim.validation.silicon import parse_row, played_row, row_scenario, scenario_perf_model
from tests.validation.test_silicon_mapping import BASE, NVFP4

NIGHTLY = "nightly-5b8c30d62b754b57"


def nightly(**changes):
    return parse_row({**BASE, **NVFP4, "backend_version": NIGHTLY, "osl": "1024", "tp_size": "2", "moe_tp_size": "2",
                      "moe_ep_size": "1", "concurrency": "16", "batch_size": "16", **changes})


@pytest.mark.parametrize(("isl", "users"), [("1024", "4"), ("1024", "256"), ("8192", "256")])
def test_the_nightly_rows_play_the_script_of_their_date(isl, users):
    s = row_scenario(nightly(isl=isl, concurrency=users, batch_size=users))
    assert s.engine.max_num_batched_tokens == 8192  # no --max-num-batched-tokens: vllm serve's default
    assert (s.engine.gpu_memory_utilization, s.engine.block_size, s.perf.kv_cache_dtype) == (0.95, 32, "fp8")
    assert s.workload.num_requests == 10 * int(users) and s.workload.arrival.warmup_requests == 0
    assert s.workload.lengths.prompt_tokens == (int(int(isl) * 0.8), int(isl))
    assert not s.perf.expert_parallel


@pytest.mark.parametrize("changes", [
    {"osl": "8192"},  # the config swept 1k/1k and 8k/1k only
    {"tp_size": "8", "moe_tp_size": "8"},  # TP 2 and TP 4 only
    {"isl": "8192", "concurrency": "512", "batch_size": "512"},  # 8k/1k to 256 users
    {"backend_version": "0.19.0"},  # the release's rows keep the AIPerf play
])
def test_rows_outside_it_keep_the_generator_deployment(changes):
    row = nightly(**changes)
    assert recipe(played_row(row)) is None
    assert row_scenario(row).engine.max_num_batched_tokens == row.batch_size + row.isl + 1500


def test_the_builds_prompt_steps_pay_the_eager_launch_time():
    """Without a capture size vLLM graphs steps up to 512 tokens, so every step with a prompt (>= 819 tokens) runs
    without graphs: 0.5 ms for each of MiniMax-M2.5's 62 layers on a step with prompt tokens, none on a decode step;
    the 0.19.0 release (its script captures to 2,048 tokens) pays none."""
    build = scenario_perf_model(row_scenario(nightly()))
    release = scenario_perf_model(row_scenario(nightly(backend_version="0.19.0")))
    assert build.constants.eager_layer_s == 0.0005 and release.constants.eager_layer_s == 0.0
    no_eager = scenario_perf_model(row_scenario(nightly(), overrides={"eager_layer_s": 0.0}))
    decodes = [1536] * 16
    assert build.step_time_s([(1024, 0)], decodes) - no_eager.step_time_s([(1024, 0)], decodes) == pytest.approx(62 * 0.0005)
    assert build.step_time_s([], decodes) == no_eager.step_time_s([], decodes)


def test_the_build_has_its_front_end_per_prompt_token():
    s = row_scenario(nightly())
    assert s.frontend.profile == f"vllm@b200@{NIGHTLY}"
    request_s, prompt_token_s, latency_s = s.frontend.constants()[:3]
    assert (request_s, prompt_token_s, latency_s) == (0.005, 1.2e-05, 0.03)
