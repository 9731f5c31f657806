"""vLLM H100 / H200 0.18.0 rows measured by InferenceMAX's `gptoss_fp4_h{100,200}.sh` and `minimaxm2.5_fp8_h100.sh`
play those scripts' `vllm serve` flags and their client (benchmark_serving: ten requests per user, lengths over
[0.8 x, x]), only inside the configs' sweeps; every other vLLM row keeps the generator's deployment."""

from __future__ import annotations

from servesim.simulation import simulate
from servesim.validation.inferencemax import recipe
from servesim.validation.run import client_metrics
from servesim.validation.silicon import ClientOptions, parse_row, played_row, row_scenario, scenario_perf_model
from tests.validation.test_silicon_mapping import BASE

GPTOSS = {**BASE, "backend_version": "0.18.0", "model_path": "openai/gpt-oss-120b", "system": "h200_sxm",
          "precision": "fp4", "gemm_quant_mode": "nvfp4", "moe_quant_mode": "nvfp4", "osl": "1024",
          "concurrency": "16", "batch_size": "16", "tp_size": "4", "moe_tp_size": "4", "moe_ep_size": "1"}


def scenario(options: ClientOptions = ClientOptions(), **changes):
    return row_scenario(parse_row({**GPTOSS, **changes}), options)


def test_script_row_plays_its_flags_and_client():
    s = scenario()
    assert s.engine.max_num_batched_tokens == 8192  # max-num-batched-tokens: 8192, whatever the prompt
    assert (s.engine.gpu_memory_utilization, s.engine.block_size, s.perf.kv_cache_dtype) == (0.90, 16, "auto")
    assert s.workload.num_requests == 160 and s.workload.arrival.warmup_requests == 0  # CONC x 10, warm-up drained
    assert (s.workload.lengths.prompt_tokens, s.workload.lengths.output_tokens) == ((819, 1024), (819, 1024))
    assert scenario(isl="8192", tp_size="1", moe_tp_size="1", concurrency="64", batch_size="64").engine.max_num_batched_tokens == 8192


def test_rows_outside_the_script_keep_the_generator_deployment():
    for changes in ({"tp_size": "1", "moe_tp_size": "1"},  # TP 1 ran 1k/1k at 4 users only
                    {"isl": "8192", "tp_size": "8", "moe_tp_size": "8", "concurrency": "64", "batch_size": "64"},  # to 32
                    {"osl": "256"},  # not a shape of the sweep
                    {"isl": "8192", "system": "h100_sxm", "tp_size": "8", "moe_tp_size": "8", "concurrency": "32",
                     "batch_size": "32"},  # H100's TP 8 8k/1k ran to 16 users
                    {"system": "h100_sxm", "tp_size": "1", "moe_tp_size": "1", "concurrency": "4", "batch_size": "4"},  # no TP 1
                    {"backend_version": "0.16.0"}, {"system": "b200_sxm"}):
        row = parse_row({**GPTOSS, **changes})
        assert recipe(played_row(row)) is None, changes
        s = row_scenario(row)
        assert s.workload.lengths.prompt_tokens == row.isl and s.engine.max_num_batched_tokens == row.batch_size + row.isl + 1500
    off = scenario(ClientOptions(benchmark_recipes=False))
    assert off.workload.lengths.prompt_tokens == 1024 and off.engine.max_num_batched_tokens == 16 + 1024 + 1500


def test_h100_scripts_play_their_flags():
    h100 = scenario(system="h100_sxm", isl="8192", tp_size="8", moe_tp_size="8")  # TP 8 8k/1k at 16 users: in its sweep
    assert (h100.engine.max_num_batched_tokens, h100.workload.num_requests) == (8192, 160)
    minimax = scenario(system="h100_sxm", model_path="MiniMaxAI/MiniMax-M2.5", precision="fp8", gemm_quant_mode="fp8",
                       moe_quant_mode="fp8", moe_tp_size="1", moe_ep_size="4")
    assert minimax.perf.expert_parallel and minimax.engine.max_num_batched_tokens == 8192  # vllm serve's default
    assert (minimax.perf.kv_cache_dtype, minimax.workload.lengths.prompt_tokens) == ("auto", (819, 1024))


def test_release_prices_its_moe_kernels_and_front_end():
    # eta_moe_compute for the release's experts (calibration_serving.yaml): weight-only 4-bit (Marlin) 0.15 on both
    # Hopper GPUs, block FP8 (MiniMax) 0.08 on H100; the older release keeps the dense GEMMs' efficiency
    h200, h100, older = (scenario_perf_model(scenario(**c)) for c in ({}, {"system": "h100_sxm"}, {"backend_version": "0.16.0"}))
    minimax = scenario_perf_model(scenario(system="h100_sxm", model_path="MiniMaxAI/MiniMax-M2.5", precision="fp8",
                                           gemm_quant_mode="fp8", moe_quant_mode="fp8", moe_tp_size="1", moe_ep_size="4"))
    assert h200.constants.eta_moe_compute == h100.constants.eta_moe_compute == 0.15
    assert (minimax.constants.eta_moe_compute, older.constants.eta_moe_compute) == (0.08, 0.0)
    assert scenario(system="h100_sxm").frontend.constants()[2] == 0.02  # latency_s refitted under the scripts' client


def test_varied_lengths_break_the_lock_step_wave():
    # fixed lengths keep the 16 users in one wave every round (every round's prompts arrive together and
    # queue behind each other); over [0.8 x, x] the users fall out of step and fewer prompts queue at once
    script = scenario()
    lengths = script.workload.lengths.model_copy(update={"prompt_tokens": 1024, "output_tokens": 1024})
    fixed = script.model_copy(update={"workload": script.workload.model_copy(update={"lengths": lengths})})
    (varied_ttft, _, n), (fixed_ttft, _, _) = (client_metrics(simulate(s).requests) for s in (script, fixed))
    assert n == 160
    assert varied_ttft < 0.8 * fixed_ttft
