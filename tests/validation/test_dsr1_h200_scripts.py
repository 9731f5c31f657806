"""TensorRT-LLM DeepSeek-R1 H200 rows without a release are InferenceMAX's plain runs (`dsr1_fp8_h200_trt.sh`):
they play that script as the release and expert parallelism it ran (1.1.0rc2.post2, EP = TP), with its budget,
FP8 KV cache and client; the rows that record 1.1.0rc2.post2 (its MTP variant) keep their play (exact)."""

from __future__ import annotations

from servesim.validation.inferencemax import as_run
from servesim.validation.silicon import ClientOptions, parse_row, row_request_counts, row_scenario
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


def test_the_mtp_campaign_and_other_rows_keep_their_deployment():
    # rows recording the release are the MTP script's (search space 4-64 / 4-128 / 4-32 users plus attention DP)
    mtp = scenario(backend_version="1.1.0rc2.post2", moe_ep_size="8")
    assert mtp.engine.max_num_batched_tokens == 2560 and mtp.workload.num_requests == 64 + 16  # the generator's
    assert mtp.perf.kv_cache_dtype == "auto"
    for changes in ({"system": "b200_sxm"}, {"backend": "vllm"}, {"model_path": "meta-llama/Llama-3.1-70B"}):
        row = parse_row({**PLAIN, **changes})
        assert as_run(row) == row, changes
    llama = scenario(model_path="meta-llama/Llama-3.1-70B", tp_size="4")  # 70b_fp8_h200_trt_slurm.sh, unchanged
    assert llama.perf.engine_version == "" and llama.engine.max_num_batched_tokens == 16384
    off = scenario(ClientOptions(benchmark_recipes=False))  # the switch keeps the row as it was run
    assert off.perf.engine_version == "1.1.0rc2.post2" and off.engine.max_num_batched_tokens == 1056 + 1504
