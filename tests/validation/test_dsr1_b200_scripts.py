"""TensorRT-LLM DeepSeek-R1 B200 rows that record release 1.2.0rc6.post2 play InferenceMAX's scripts of that
release (`dsr1_{fp4,fp8}_b200_trt.sh`): budget at least 8,192 tokens, FP8 batch waiting, FP8 KV, their client;
the rows of 1.2.0rc6.post3 play the scripts' MTP variants (`dsr1_{fp4,fp8}_b200_trt_mtp.sh`); the rows of 1.1.0rc2.post2
play the plain scripts of 2025-12 or their MTP variants of 2026-01, by the MTP configs' sweep."""

from __future__ import annotations


from servesim.validation.inferencemax_dsr1 import is_dsr1_b200_mtp_run, mtp_piecewise_cuda_graph
from servesim.validation.silicon import (ClientOptions, parse_row, played_row, row_scenario,
                                        scenario_perf_model)
from servesim.validation.silicon_file import read_rows, recover_versions
from tests.validation.test_inferencemax import balance, waits
from tests.validation.test_silicon_mapping import BASE
from tests.validation.silicon_rows import SILICON

DSR1 = {**BASE, "id": "dsr1_b200_trtllm_fp4_agg_1024x1024_c16_cfg82", "backend": "trtllm",
        "backend_version": "1.2.0rc6.post2", "model_path": "deepseek-ai/DeepSeek-V3", "system": "b200_sxm",
        "gemm_quant_mode": "nvfp4", "tp_size": "4", "moe_tp_size": "4", "moe_ep_size": "1", "batch_size": "16",
        "concurrency": "16", "isl": "1024", "osl": "1024"}
EAGER_S = 0.00085  # calibration_serving.yaml old_release_eager


def scenario(options: ClientOptions = ClientOptions(), **changes):
    return row_scenario(parse_row({**DSR1, **changes}), options, calibration=None)


def test_rc6_post2_plays_the_script_and_its_client():
    s = scenario()
    assert s.engine.max_num_batched_tokens == 8192  # max(8,192, 16 + 1,024 + 64 rounded up to 64)
    assert s.perf.kv_cache_dtype == "fp8" and s.engine.num_speculative_tokens == 0  # kv_cache_config.dtype: fp8
    assert waits(s) == (0, 0.0) and s.scheduler.model_dump()["enable_chunked_context"] is False
    assert s.workload.num_requests == 160 and s.workload.lengths.prompt_tokens == (819, 1024)  # CONC x 10, [0.8 x, x]
    assert s.frontend.profile == "trtllm@b200@1.2.0rc6.post2"
    assert scenario(isl="8192", concurrency="256", batch_size="256").engine.max_num_batched_tokens == 8512


def test_fp8_batch_waiting_only_where_the_script_sets_it():
    # dsr1_fp8_b200_trt.sh: DELAY_BATCHING at 1k/1k from 64 users; TensorRT-LLM turns it off with attention DP
    assert waits(scenario(gemm_quant_mode="fp8", concurrency="64", batch_size="64")) == (40, 0.8)
    for changes in ({"gemm_quant_mode": "fp8", "concurrency": "32"}, {"concurrency": "64"},
                    {"gemm_quant_mode": "fp8", "concurrency": "64", "osl": "8192"}):
        assert waits(scenario(**changes)) == (0, 0.0), changes
    dp = scenario(gemm_quant_mode="fp8", concurrency="256", batch_size="32", tp_size="1", attention_dp_size="8",
                  moe_tp_size="1", moe_ep_size="8")
    assert waits(dp) == (0, 0.0) and balance(dp) == (True, 60, 0) and dp.engine.max_num_batched_tokens == 8192


def test_other_rows_keep_their_deployment():
    # a release taken from the row's deployment config was measured before that release's scripts ran
    recorded, recovered = recover_versions([
        parse_row(DSR1), parse_row({**DSR1, "id": "dsr1_b200_trtllm_fp4_agg_1024x1024_c64_cfg82", "backend_version": "",
                                    "concurrency": "64", "batch_size": "64"})])
    assert recorded.version_recorded and recovered.version == "1.2.0rc6.post2" and not recovered.version_recorded
    s = row_scenario(recovered, calibration=None)
    assert s.engine.max_num_batched_tokens == 2592 and s.workload.num_requests == 256 + 64  # 64 + 1,024 + 1,500
    assert s.perf.kv_cache_dtype == "auto"
    for changes, options in (({"system": "h200_sxm"}, ClientOptions()),
                             ({"model_path": "openai/gpt-oss-120b"}, ClientOptions()),
                             ({}, ClientOptions(benchmark_recipes=False))):
        s = scenario(options, **changes)
        assert s.engine.max_num_batched_tokens == 2560 and s.workload.num_requests == 64 + 16, changes


def test_rc6_post3_plays_the_mtp_script():
    # MTP 3 without attention DP: budget (3 + 1) x 16 + 1,024 + 64 rounded up to 64, no 8,192 floor
    s = scenario(backend_version="1.2.0rc6.post3")
    assert s.engine.max_num_batched_tokens == 1152 and s.engine.num_speculative_tokens == 3
    assert s.engine.spec_acceptance_rate == 0.628 and s.engine.spec_draft_layers == 1  # 1 + a + a^2 + a^3 = 2.50
    assert s.perf.kv_cache_dtype == "fp8" and waits(s) == (0, 0.0)  # no batch waiting in the MTP scripts
    assert s.workload.num_requests == 160 and s.workload.lengths.prompt_tokens == (819, 1024)
    # MTP 1 with attention DP, the batch per rank (CONC / TP: 256 / 8): 2 x 32 + 8,192 + 64 -> 8,320
    dp = scenario(backend_version="1.2.0rc6.post3", gemm_quant_mode="fp8", isl="8192", concurrency="256",
                  batch_size="32", tp_size="1", attention_dp_size="8", moe_tp_size="1", moe_ep_size="8")
    assert dp.engine.num_speculative_tokens == 1 and dp.engine.max_num_batched_tokens == 8320
    assert balance(dp) == (True, 60, 0)


def test_rc6_post2_streams_through_the_serial_server_process():
    # trtllm-serve without --num_postprocess_workers: the server process post-processes every streamed response
    # (frontend.yaml `trtllm@b200@1.2.0rc6.post2`, output_token_s 75 us); the MTP release keeps no such cost
    assert scenario().frontend.token_s() == 7.5e-05
    assert scenario(backend_version="1.2.0rc6.post3").frontend.token_s() == 0.0
    assert scenario(backend_version="1.2.0rc2.post2").frontend.token_s() == 0.0


def test_the_serial_token_work_delays_first_tokens_more_under_more_load():
    from servesim.simulation import simulate
    from servesim.validation.run import client_metrics

    def ttft_s(users: int, token_s: float) -> float:
        row = parse_row({**DSR1, "tp_size": "8", "moe_tp_size": "8", "concurrency": str(users), "batch_size": str(users),
                         "osl": "128"})
        s = row_scenario(row, ClientOptions(), calibration=None, frontend={"output_token_s": token_s})
        return client_metrics(simulate(s).requests)[0]

    few, many = ttft_s(4, 7.5e-05) / ttft_s(4, 0.0), ttft_s(128, 7.5e-05) / ttft_s(128, 0.0)
    assert 1.0 <= few < 1.005 and many > 1.02  # 4 users: +0.02 %; 128 users: +3 % (calibration off)

def test_rc2_post2_plays_the_plain_script_or_its_mtp_variant():
    # an AIConfigurator config row (`_cfg<N>`) is a plain run: the 2025-12 script's budget, 32 + 1,024 + 64 -> 1,152,
    # no floor and no drafts; FP8 KV cache, the scripts' client
    plain = scenario(backend_version="1.1.0rc2.post2", concurrency="32", batch_size="32")
    assert plain.engine.max_num_batched_tokens == 1152 and plain.engine.num_speculative_tokens == 0
    assert plain.perf.kv_cache_dtype == "fp8" and plain.workload.num_requests == 320
    assert plain.frontend.profile == "trtllm@b200@1.1.0rc2.post2"
    # InferenceMAX's export row at a point the MTP config swept (NVFP4 TP 4 x EP 4, 1k/1k, 16-64 users): MTP 3,
    # budget 4 x 32 + 1,024 + 64 -> 1,216; at TP 4 without EP the MTP config stopped at 8 users, so 32 is plain
    export = {"backend_version": "1.1.0rc2.post2", "concurrency": "32", "batch_size": "32",
              "id": "2026_04_06_deepseek_r1_b200_sxm_trtllm_fp4_agg_1024x1024_c32_tp4_ep4_1588"}
    mtp = scenario(**export, tp_size="16", moe_ep_size="4")
    assert mtp.engine.num_speculative_tokens == 3 and mtp.engine.max_num_batched_tokens == 1216
    assert scenario(**export).engine.num_speculative_tokens == 0


def test_rc2_post2_rows_of_the_file_split_by_their_upstream_dates():
    # the upstream file dates 22 of the release's 54 B200 rows 2025-12-15 (plain configs: config 177's 14 FP8 rows,
    # 1 FP8 and 7 NVFP4 export rows) and 32 2026-01-14 (the MTP configs)
    rows = [played_row(r) for r in read_rows(SILICON)
            if (r.backend, r.system, r.version) == ("trtllm", "b200_sxm", "1.1.0rc2.post2")]
    mtp = [r for r in rows if is_dsr1_b200_mtp_run(r)]
    assert len(rows) == 54 and len(mtp) == 32 and not any("_cfg" in r.id for r in mtp)
    assert {r.id for r in rows if not is_dsr1_b200_mtp_run(r) and "_cfg" not in r.id} == {
        f"2026_04_06_deepseek_r1_b200_sxm_trtllm_{name}" for name in (
            "fp8_agg_8192x1024_c64_tp8_ep8_963", "fp4_agg_1024x1024_c32_tp4_ep1_41", "fp4_agg_1024x8192_c32_tp4_ep1_892",
            "fp4_agg_1024x8192_c16_tp8_ep1_881", "fp4_agg_8192x1024_c32_tp8_ep1_122", "fp4_agg_8192x1024_c4_tp4_ep4_944",
            "fp4_agg_8192x1024_c8_tp4_ep4_950", "fp4_agg_8192x1024_c16_tp4_ep4_971")}


def test_rc2_post2_fp8_prompt_steps_pay_the_quantisation_and_the_eager_price():
    # calibration_serving.yaml old_release_act_quant (sourced) and old_release_eager (fitted): a step with prompt
    # tokens pays 366 quantised linears x 27 ns a token and 61 layers x the eager price; a decode step neither
    fp8 = {**DSR1, "id": "dsr1_b200_trtllm_fp8_agg_1024x1024_c4_cfg177", "backend_version": "1.1.0rc2.post2",
           "gemm_quant_mode": "fp8", "tp_size": "8", "moe_tp_size": "1", "moe_ep_size": "8", "concurrency": "4",
           "batch_size": "4"}
    row = parse_row(fp8)
    perf = scenario_perf_model(row_scenario(row))
    base = scenario_perf_model(row_scenario(row, overrides={"eager_layer_s": 0.0, "act_quant_token_s": 0.0}))
    assert (perf.constants.act_quant_token_s, perf.constants.eager_layer_s) == (2.7e-08, EAGER_S)
    prompt = perf.step_time_s([(1024, 0)], [2048] * 4) - base.step_time_s([(1024, 0)], [2048] * 4)
    assert abs(prompt - (366 * 2.7e-08 * 1024 + 61 * EAGER_S)) < 1e-9
    assert perf.step_time_s([], [2048] * 4) == base.step_time_s([], [2048] * 4)
    # the release's NVFP4 rows (no FP8 block linears; their eager price not fitted), H200's rows of the release (its
    # own eager price, no such quantisation on Hopper) and B200's next FP8 release (the quantisation alone)
    for changes, expected in (({"gemm_quant_mode": "nvfp4", "tp_size": "4", "moe_ep_size": "4"}, (0.0, 0.0)),
                              ({"system": "h200_sxm"}, (0.0, 0.00175)),
                              ({"backend_version": "1.2.0rc6.post2"}, (2.7e-08, 0.0))):
        other = scenario_perf_model(row_scenario(parse_row({**fp8, **changes}))).constants
        assert (other.act_quant_token_s, other.eager_layer_s) == expected, changes


def test_rc6_post3_nvfp4_prompt_steps_pay_less_where_the_script_captures_piecewise_graphs():
    # dsr1_fp4_b200_trt_mtp.sh (InferenceX pull request 642) turns piecewise CUDA graphs on only at 1k/1k with 32-64 users
    # (128 without attention DP) and 1k/8k with 64; dsr1_fp8_b200_trt_mtp.sh (632) everywhere but with attention DP and
    # at the narrow loads. An NVFP4 prompt step pays the release's eager price without the pieces, the smaller one with
    eager, pieces = 7e-04, 5e-04  # calibration_serving.yaml mtp_eager; inferencemax_dsr1.MTP_PIECEWISE_EAGER_LAYER_S
    dp = {"tp_size": "1", "attention_dp_size": "8", "moe_tp_size": "1", "moe_ep_size": "8"}
    cases = ((("nvfp4", 1024, 1024, 16), {}, False), (("nvfp4", 1024, 1024, 32), {}, True),
             (("nvfp4", 1024, 1024, 128), {}, True), (("nvfp4", 1024, 1024, 128), dp, False),
             (("nvfp4", 1024, 1024, 64), dp, True), (("nvfp4", 1024, 8192, 64), {}, True),
             (("nvfp4", 1024, 8192, 32), {}, False), (("nvfp4", 8192, 1024, 64), {}, False),
             (("fp8", 1024, 1024, 4), {}, False), (("fp8", 1024, 1024, 8), {}, True),
             (("fp8", 1024, 8192, 8), {}, False), (("fp8", 8192, 1024, 16), {}, False),
             (("fp8", 8192, 1024, 32), {}, True), (("fp8", 1024, 1024, 256), dp, False))
    for (quant, isl, osl, users), changes, piecewise in cases:
        row = parse_row({**DSR1, "backend_version": "1.2.0rc6.post3", "gemm_quant_mode": quant, "tp_size": "8",
                         "moe_tp_size": "8", "isl": str(isl), "osl": str(osl), "concurrency": str(users),
                         "batch_size": str(users), **changes})
        assert mtp_piecewise_cuda_graph(played_row(row)) is piecewise, (quant, isl, osl, users, changes)
        expected = (pieces if piecewise else eager) if quant == "nvfp4" else 0.0  # the FP8 entry has no eager price
        assert scenario_perf_model(row_scenario(row)).constants.eager_layer_s == expected, (quant, isl, osl, users)
    # only the steps with prompt tokens: 61 layers x the difference, a decode step the same
    row = parse_row({**DSR1, "backend_version": "1.2.0rc6.post3", "tp_size": "8", "moe_tp_size": "8",
                     "concurrency": "32", "batch_size": "32"})
    with_pieces = scenario_perf_model(row_scenario(row))
    without = scenario_perf_model(row_scenario(row, overrides={"eager_layer_s": eager}))
    prompt = without.step_time_s([(1024, 0)], [2048] * 4) - with_pieces.step_time_s([(1024, 0)], [2048] * 4)
    assert abs(prompt - 61 * (eager - pieces)) < 1e-9
    assert without.step_time_s([], [2048] * 4) == with_pieces.step_time_s([], [2048] * 4)
    # the same shape under the plain release's script, and under the older release's MTP campaign, keep their prices
    plain = parse_row({**DSR1, "backend_version": "1.2.0rc6.post2", "concurrency": "32", "batch_size": "32"})
    assert scenario_perf_model(row_scenario(plain)).constants.eager_layer_s == 0.0
    old = parse_row({**DSR1, "id": "2026_04_06_deepseek_r1_b200_sxm_trtllm_fp4_agg_1024x1024_c32_tp8_ep8_1",
                     "backend_version": "1.1.0rc2.post2", "tp_size": "8", "moe_tp_size": "1", "moe_ep_size": "8",
                     "concurrency": "32", "batch_size": "32"})
    assert is_dsr1_b200_mtp_run(played_row(old))
    assert scenario_perf_model(row_scenario(old)).constants.eager_layer_s == 0.0
