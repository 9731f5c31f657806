"""vLLM rows measured by InferenceMAX's scripts play that script's `vllm serve` flags and its client
(benchmark_serving: ten requests per user, lengths over [0.8 x, x], all users started at once), only
inside the config's sweep; every other vLLM row keeps the generator's deployment. Here: the
Llama-3.1-70B rows that record no vLLM version (`70b_fp8_h100_*.sh`, `70b_fp4_b200_docker.sh`,
2025-10-29), and the H100 gpt-oss-120b rows without a version inside `gptoss_fp4_h100`'s sweep of 2025-11-02;
the scripts' lock-step test is in test_vllm_inferencemax.py."""

from __future__ import annotations


from servesim.validation.inferencemax import recipe
from servesim.validation.inferencemax_vllm import OUTSIDE_SWEEP
from servesim.validation.silicon import (ClientOptions, inexpressible_reason, parse_row, played_row,
                                         read_rows, row_request_counts, row_scenario, scenario_perf_model)
from tests.validation.test_silicon_mapping import BASE
from tests.validation.silicon_rows import SILICON


LLAMA_H100 = {**BASE, "model_path": "meta-llama/Llama-3.1-70B", "system": "h100_sxm", "backend_version": "",
              "gemm_quant_mode": "fp8", "moe_quant_mode": "fp8", "tp_size": "4", "moe_tp_size": "4", "moe_ep_size": "1",
              "attention_dp_size": "1", "osl": "1024", "concurrency": "16", "batch_size": "16"}
LLAMA_B200 = {**LLAMA_H100, "system": "b200_sxm", "gemm_quant_mode": "nvfp4", "moe_quant_mode": "nvfp4"}


def scenario(fields: dict, options: ClientOptions = ClientOptions(), **changes):
    return row_scenario(parse_row({**fields, **changes}), options)


def test_script_rows_play_its_flags_and_client():
    for fields in (LLAMA_H100, LLAMA_B200):
        s = scenario(fields)
        assert s.tp == 4 and s.engine.max_num_batched_tokens == 8192  # max-num-batched-tokens: 8192, every shape
        assert (s.engine.gpu_memory_utilization, s.engine.block_size, s.perf.kv_cache_dtype) == (0.9, 16, "fp8")
        assert s.workload.num_requests == 160 and s.workload.arrival.warmup_requests == 0  # CONC x 10, no warm-up
        assert s.workload.arrival.ramp_up_s == 0.0  # all users at once: the out-of-step special case gives way
        assert (s.workload.lengths.prompt_tokens, s.workload.lengths.output_tokens) == ((819, 1024), (819, 1024))
        assert scenario(fields, isl="8192").engine.max_num_batched_tokens == 8192
    assert scenario(LLAMA_B200, tp_size="1", moe_tp_size="1").tp == 1  # B200 ran TP 1-8, H100 TP 2-8


def test_h100_llama_script_plays_its_async_scheduling():
    """`70b_fp8_h100_*.sh` passes `async-scheduling: true` (v0.10.2's opt-in): the step is max(CPU, GPU) with the
    deployment's per-step time on the GPU (calibration vllm_async_v0102); B200's script is not played so (vl70_27)."""
    h100 = scenario(LLAMA_H100)
    assert h100.perf.overrides["overlap_cpu"] == 1.0
    c = scenario_perf_model(h100).constants
    assert (c.overlap_cpu, c.seq_gpu_s, c.layer_floor_s) == (1.0, 7.5e-06, 3.254e-05)
    assert "overlap_cpu" not in scenario(LLAMA_B200).perf.overrides
    assert scenario_perf_model(scenario(LLAMA_B200)).constants.overlap_cpu == 0.0
    # the campaign's gpt-oss rows (int4 weights) keep the synchronous play and the H100 constants
    gpt = scenario(LLAMA_H100, model_path="openai/gpt-oss-120b", gemm_quant_mode="nvfp4", moe_quant_mode="nvfp4",
                   tp_size="8", moe_tp_size="8", isl="8192", concurrency="32", batch_size="32")
    g = scenario_perf_model(gpt).constants
    assert (g.overlap_cpu, g.seq_gpu_s) == (0.0, 0.0) and g.layer_floor_s < 2e-05
    # without the scripts the row plays the generator's deployment, synchronously
    assert scenario_perf_model(scenario(LLAMA_H100, ClientOptions(benchmark_recipes=False))).constants.overlap_cpu == 0.0


def test_rows_outside_the_script_keep_their_campaign_play():
    for fields, changes in ((LLAMA_H100, {"tp_size": "1", "moe_tp_size": "1"}),  # H100 ran TP 2 / 4 / 8
                            (LLAMA_H100, {"concurrency": "128", "batch_size": "128"}),  # users 4-64
                            (LLAMA_B200, {"osl": "256"}),  # not a shape of the sweep
                            (LLAMA_H100, {"backend_version": "0.18.0"}), (LLAMA_B200, {"gemm_quant_mode": "fp8"}),
                            (LLAMA_H100, {"system": "h200_sxm"})):
        row = parse_row({**fields, **changes})
        assert recipe(played_row(row)) is None, changes
        s = row_scenario(row)
        assert s.workload.lengths.prompt_tokens == row.isl and s.engine.max_num_batched_tokens == row.batch_size + row.isl + 1500
    # without the scripts the campaign's special cases come back: H100 out of step, B200's warm-up in the loop
    off = ClientOptions(benchmark_recipes=False)
    assert scenario(LLAMA_H100, off).workload.arrival.ramp_up_s > 0
    assert row_request_counts(parse_row(LLAMA_B200), off).warmup == 16


def test_h100_gpt_oss_rows_without_a_version_play_their_script_inside_its_sweep():
    # gptoss_fp4_h100_*.sh of 2025-11-02: the Llama script's flags without a KV precision (vLLM's auto: 16 bits)
    gpt = {**LLAMA_H100, "model_path": "openai/gpt-oss-120b", "gemm_quant_mode": "nvfp4", "moe_quant_mode": "nvfp4",
           "tp_size": "8", "moe_tp_size": "8", "isl": "8192", "concurrency": "32", "batch_size": "32"}
    s = scenario(gpt)
    assert s.engine.max_num_batched_tokens == 8192 and s.perf.kv_cache_dtype == "auto"
    assert s.workload.num_requests == 320 and s.workload.arrival.ramp_up_s == 0.0
    # the 512-user rows lie outside every sweep of those dates, and the H200 rows keep the generator's play
    for changes in ({"concurrency": "512", "batch_size": "512"}, {"system": "h200_sxm"}):
        assert recipe(played_row(parse_row({**gpt, **changes}))) is None, changes


def test_h100_gpt_oss_512_user_rows_are_listed_not_expressible():
    """No InferenceMAX sweep of their dates ran 512 users on this deployment, and their means hold about 100
    requests in service: listed with that reason, whatever the TP, shape or release; 64 users still play."""
    gpt = {**LLAMA_H100, "model_path": "openai/gpt-oss-120b", "gemm_quant_mode": "nvfp4", "moe_quant_mode": "nvfp4",
           "concurrency": "512", "batch_size": "512"}
    why = OUTSIDE_SWEEP[("h100_sxm", "gpt-oss-120b", 512)]
    for changes in ({}, {"backend_version": "0.11.2", "tp_size": "2", "moe_tp_size": "2", "osl": "8192"}):
        assert inexpressible_reason(parse_row({**gpt, **changes})) == why, changes
    for changes in ({"concurrency": "64", "batch_size": "64"}, {"system": "h200_sxm"}, {"backend": "sglang"}):
        assert inexpressible_reason(parse_row({**gpt, **changes})) is None, changes


def test_the_listed_rows_are_the_nine_h100_gpt_oss_runs_at_512_users():
    rows = read_rows(SILICON)
    listed = [r for r in rows if inexpressible_reason(r) in OUTSIDE_SWEEP.values()]
    assert len(listed) == 9 and {(r.backend, r.system, r.concurrency) for r in listed} == {("vllm", "h100_sxm", 512)}
    assert sorted(r.version for r in listed) == [""] * 3 + ["0.11.2"] * 6
    for r in listed:  # the means' requests in service (Little's law): about 100 of the 512 users
        decode_s = (r.osl - 1) * r.tpot_s
        assert 90 < r.concurrency * decode_s / (r.ttft_s + decode_s) < 110, r.id
