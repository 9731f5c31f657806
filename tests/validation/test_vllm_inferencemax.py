"""vLLM H200 0.18.0 gpt-oss-120b rows measured by InferenceMAX's `gptoss_fp4_h200.sh` play that script's
`vllm serve` flags and its client (benchmark_serving: ten requests per user, lengths over [0.8 x, x]), only
inside the config's sweep; every other vLLM row keeps the generator's deployment."""

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
                    {"backend_version": "0.16.0"}, {"system": "h100_sxm"}):
        row = parse_row({**GPTOSS, **changes})
        assert recipe(played_row(row)) is None, changes
        s = row_scenario(row)
        assert s.workload.lengths.prompt_tokens == row.isl and s.engine.max_num_batched_tokens == row.batch_size + row.isl + 1500
    off = scenario(ClientOptions(benchmark_recipes=False))
    assert off.workload.lengths.prompt_tokens == 1024 and off.engine.max_num_batched_tokens == 16 + 1024 + 1500


def test_release_prices_the_marlin_experts_on_h200_only():
    # eta_moe_compute 0.15 for the release's weight-only 4-bit experts (Marlin) on H200 (calibration_serving.yaml);
    # H100 and the older release keep the dense GEMMs' efficiency
    h200, h100, older = (scenario_perf_model(scenario(**c)) for c in ({}, {"system": "h100_sxm"}, {"backend_version": "0.16.0"}))
    assert h200.constants.eta_moe_compute == 0.15
    assert h100.constants.eta_moe_compute == 0.0 and older.constants.eta_moe_compute == 0.0


def test_varied_lengths_break_the_lock_step_wave():
    # fixed lengths keep the 16 users in one wave every round (every round's prompts arrive together and
    # queue behind each other); over [0.8 x, x] the users fall out of step and fewer prompts queue at once
    script = scenario()
    lengths = script.workload.lengths.model_copy(update={"prompt_tokens": 1024, "output_tokens": 1024})
    fixed = script.model_copy(update={"workload": script.workload.model_copy(update={"lengths": lengths})})
    (varied_ttft, _, n), (fixed_ttft, _, _) = (client_metrics(simulate(s).requests) for s in (script, fixed))
    assert n == 160
    assert varied_ttft < 0.8 * fixed_ttft
