"""TensorRT-LLM DeepSeek-R1 H200 rows without a release are InferenceMAX's plain runs (`dsr1_fp8_h200_trt.sh`):
they play that script as the release and expert parallelism it ran (1.1.0rc2.post2, EP = TP), with its budget,
FP8 KV cache and client; the rows that record 1.1.0rc2.post2 play its MTP variant (`dsr1_fp8_h200_trt_mtp.sh`: its
drafts, budget, FP8 KV cache and client); the release's context steps pay its eager price, its decodes its floor."""

from __future__ import annotations

from dataclasses import replace

from servesim.validation import inferencemax
from servesim.validation.inferencemax_dsr1 import as_run
from servesim.validation.silicon import ClientOptions, parse_row, row_request_counts, row_scenario, scenario_perf_model
from tests.validation.test_silicon_mapping import BASE

PLAIN = {**BASE, "id": "2026_04_06_deepseek_r1_h200_sxm_trtllm_fp8_agg_1024x1024_c16_tp8_ep1_62", "backend": "trtllm",
         "backend_version": "", "model_path": "deepseek-ai/DeepSeek-R1", "system": "h200_sxm", "gemm_quant_mode": "fp8",
         "tp_size": "8", "moe_tp_size": "", "moe_ep_size": "1", "batch_size": "16", "concurrency": "16",
         "isl": "1024", "osl": "1024"}


def scenario(options: ClientOptions = ClientOptions(), **changes):
    return row_scenario(parse_row({**PLAIN, **changes}), options, calibration=None)


def test_plain_rows_run_as_the_release_and_expert_parallelism_of_the_script():
    row = as_run(parse_row(PLAIN))
    assert (row.version, row.version_recorded, row.tp, row.moe_tp, row.moe_ep) == ("1.1.0rc2.post2", False, 8, 1, 8)
    s = scenario()
    assert s.perf.engine_version == "1.1.0rc2.post2" and s.perf.expert_parallel is True  # EP_SIZE = TP
    assert s.frontend.profile == "trtllm@h200@1.1.0rc2.post2"  # the release's own API server
    assert s.perf.kv_cache_dtype == "fp8" and s.engine.num_speculative_tokens == 0  # plain: no MTP
    assert s.engine.max_num_batched_tokens == 8192  # max(8,192, 16 + 1,024 + 64 rounded up to 64)
    assert scenario(isl="8192", concurrency="32", batch_size="32").engine.max_num_batched_tokens == 8320
    assert s.workload.num_requests == 160 and s.workload.arrival.warmup_requests == 0  # --num-prompts CONC * 10
    assert s.workload.lengths.prompt_tokens == (819, 1024)  # --random-range-ratio 0.8
    assert row_request_counts(parse_row(PLAIN), ClientOptions()).measured_end == 160  # no trailing round


def test_the_mtp_campaign_plays_its_script_with_its_drafts():
    # rows recording the release are the MTP script's: MTP 3 at the B200 campaigns' acceptance, budget
    # (3 + 1) x 16 + 1,024 + 64 rounded up to 64, no floor
    mtp = scenario(backend_version="1.1.0rc2.post2", moe_ep_size="8")
    assert mtp.engine.max_num_batched_tokens == 1152 and mtp.engine.num_speculative_tokens == 3
    assert mtp.engine.spec_acceptance_rate == inferencemax.MTP_ACCEPTANCE
    assert mtp.perf.kv_cache_dtype == "fp8" and mtp.frontend.profile == "trtllm@h200@1.1.0rc2.post2"
    assert mtp.workload.num_requests == 160 and mtp.workload.lengths.prompt_tokens == (819, 1024)
    # attention DP: MTP 1, the batch per rank (256 / 8): 2 x 32 + 1,024 + 64 -> 1,152, with the scripts' balance
    dp = scenario(backend_version="1.1.0rc2.post2", concurrency="256", batch_size="32", tp_size="1",
                  attention_dp_size="8", moe_tp_size="1", moe_ep_size="8")
    assert dp.engine.max_num_batched_tokens == 1152 and dp.scheduler.attention_dp_enable_balance is True
    assert dp.perf.kv_cache_dtype == "fp8" and dp.engine.num_speculative_tokens == 1
    # a release recovered from twins or a config (not recorded) is not the MTP campaign's
    recovered = replace(parse_row({**PLAIN, "backend_version": "1.1.0rc2.post2", "moe_ep_size": "8"}), version_recorded=False)
    assert inferencemax.recipe(recovered) is not None and inferencemax.recipe(recovered).engine["max_num_batched_tokens"] == 8192


def test_the_release_prices_its_eager_context_steps():
    # calibration_serving.yaml h200_dsr1_eager: a step with prompt tokens pays 1.75 ms a layer, a decode step does not
    row = parse_row({**PLAIN, "backend_version": "1.1.0rc2.post2", "moe_ep_size": "8"})
    s = row_scenario(row)
    perf, base = scenario_perf_model(s), scenario_perf_model(row_scenario(row, overrides={"eager_layer_s": 0.0}))
    assert perf.constants.eager_layer_s == 0.00175
    prompt = perf.step_time_s([(1024, 0)], [2048] * 4) - base.step_time_s([(1024, 0)], [2048] * 4)
    assert abs(prompt - 61 * 0.00175) < 1e-9  # DeepSeek-R1's 61 layers
    assert perf.step_time_s([], [2048] * 4) == base.step_time_s([], [2048] * 4)
    assert s.frontend.constants()[2] == 0.2  # trtllm@h200@1.1.0rc2.post2 latency_s
    plain = row_scenario(parse_row(PLAIN))  # the plain campaign: the same release, the same price
    assert scenario_perf_model(plain).constants.eager_layer_s == 0.00175
    # h200_dsr1_floor: the release's decode floor per layer (fitted with the MTP rows' drafts played), both campaigns
    assert perf.constants.layer_floor_s == scenario_perf_model(plain).constants.layer_floor_s == 8.0e-05
    for changes in ({"model_path": "meta-llama/Llama-3.1-70B", "tp_size": "4"}, {"system": "b200_sxm"}):
        other = row_scenario(parse_row({**PLAIN, **changes}))
        assert scenario_perf_model(other).constants.eager_layer_s == 0.0, changes


def test_other_rows_keep_their_deployment():
    for changes in ({"system": "b200_sxm"}, {"backend": "vllm"}, {"model_path": "meta-llama/Llama-3.1-70B"}):
        row = parse_row({**PLAIN, **changes})
        assert as_run(row) == row, changes
    llama = scenario(model_path="meta-llama/Llama-3.1-70B", tp_size="4")  # 70b_fp8_h200_trt_slurm.sh, unchanged
    assert llama.perf.engine_version == "" and llama.engine.max_num_batched_tokens == 16384
    off = scenario(ClientOptions(benchmark_recipes=False))  # the switch keeps the row as it was run
    assert off.perf.engine_version == "1.1.0rc2.post2" and off.engine.max_num_batched_tokens == 1056 + 1504
