"""SGLang B300 0.5.10.post1 Qwen3.5-397B-A17B rows play the InferenceX B300 scripts that ran them (qwen3.5_fp8_b300.sh,
qwen3.5_fp4_b300.sh, qwen3.5_bf16_b300.sh of 2026-04-17, image v0.5.10.post1-cu130): no mixed chunks, each script's
chunk, budget, running requests, memory, KV precision and receive interval, benchmark_serving's client, and SGLang's
overlap loop (the take as a prompt step starts, the first-token hold) as B200 nightly-dev's script plays it
(docs/fidelity-history.md, issue 14, sgb3_29). The release's DeepSeek rows keep the generator's mixed chunks."""

from __future__ import annotations

import pytest

from servesim.validation.inferencemax import recipe
from servesim.validation.run import simulate_row
from servesim.validation.silicon import ClientOptions, played_row, row_scenario, scenario_perf_model

from tests.validation.silicon_rows import silicon_row

# qwen3_5_b300_sglang_bf16_agg_1024x1024_c8_cfg739 as the file records it: BF16 TP 4, 1k/1k at 8 users
BF16_TP4 = {"backend": "sglang", "backend_version": "0.5.10.post1", "model_path": "Qwen/Qwen3.5-397B-A17B",
            "system": "b300_sxm", "precision": "bf16", "gemm_quant_mode": "", "moe_quant_mode": "", "tp_size": "4",
            "moe_tp_size": "4", "moe_ep_size": "1", "isl": "1024", "osl": "1024", "concurrency": "8",
            "batch_size": "8", "silicon_ttft_ms": "173.98", "silicon_tpot_ms": "9.46"}
FP8_TP4 = {**BF16_TP4, "precision": "fp8", "gemm_quant_mode": "fp8", "moe_quant_mode": "fp8_block"}
# the {tp: 2, ep: 2} config, recorded as tp 4 = 2 x 2 with the MoE split 2 x 2 (recorded_parallelism)
NVFP4_TP2_EP2 = {**BF16_TP4, "precision": "fp4", "gemm_quant_mode": "nvfp4", "moe_quant_mode": "nvfp4",
                 "moe_tp_size": "2", "moe_ep_size": "2", "attention_dp_size": "1"}


def _row(base, **changes):
    return silicon_row(0, **{**base, **changes})


def _sched(s) -> dict:
    return s.scheduler.model_dump()


@pytest.mark.parametrize(("base", "users", "limits"), [
    # (running requests, chunk, budget, memory, KV, receive interval)
    (FP8_TP4, "128", (None, 16384, 16384, 0.8, "fp8", 10)),  # the FP8 script: running = CONC, interval 10 at every CONC
    (FP8_TP4, "8", (None, 16384, 16384, 0.8, "fp8", 10)),
    (NVFP4_TP2_EP2, "32", (128, 32768, 32768, 0.8, "fp8", 30)),
    (NVFP4_TP2_EP2, "8", (128, 32768, 32768, 0.8, "fp8", 10)),
    (BF16_TP4, "16", (128, 32768, 32768, 0.82, "bf16", 30)),  # no --kv-cache-dtype: the checkpoint's 16 bits
    (BF16_TP4, "8", (128, 32768, 32768, 0.82, "bf16", 10)),
    ({**BF16_TP4, "tp_size": "8", "moe_tp_size": "8"}, "64", (128, 32768, 32768, 0.82, "bf16", 30)),
])
def test_each_precision_plays_its_script(base, users, limits):
    row = _row(base, concurrency=users, batch_size=users)
    s = row_scenario(row)
    sched = _sched(s)
    running, chunk, budget, memory, kv, interval = limits
    assert (sched["chunked_prefill_size"], sched["max_prefill_tokens"]) == (chunk, budget)
    assert sched["enable_mixed_chunk"] is False and sched["scheduler_recv_interval"] == interval
    assert s.engine.gpu_memory_utilization == memory and scenario_perf_model(s).kv_cache_dtype == kv
    if running is not None:
        assert sched["max_running_requests"] == running
    # the overlap loop: the take as a prompt step starts, the first tokens held for the next prefill step
    assert sched["overlap_loop_take"] is True and sched["consecutive_prefill_launch_share"] == 1.0
    assert s.workload.num_requests == 10 * int(users) and s.workload.lengths.prompt_tokens == (819, 1024)
    assert played_row(row).tp == (2 if base is NVFP4_TP2_EP2 else int(base["tp_size"]))


@pytest.mark.parametrize(("base", "changes"), [
    (FP8_TP4, {"concurrency": "512", "batch_size": "512"}),  # the FP8 sweep stops at 256 users
    (NVFP4_TP2_EP2, {"concurrency": "256", "batch_size": "256"}),  # NVFP4 at 128
    (BF16_TP4, {"concurrency": "128", "batch_size": "128"}),  # BF16 at 64
    (FP8_TP4, {"tp_size": "8", "moe_tp_size": "8"}),  # FP8 ran TP 4 only
    (FP8_TP4, {"model_path": "deepseek-ai/DeepSeek-V3", "tp_size": "8", "moe_tp_size": "8"}),  # dsr1_fp8_b300.sh, not played
])
def test_rows_outside_the_scripts_keep_the_generator_mixed_chunks(base, changes):
    row = _row(base, **changes)
    assert recipe(played_row(row)) is None
    assert _sched(row_scenario(row))["enable_mixed_chunk"] is True


def test_the_script_brings_the_8_user_8k_bf16_first_token_within_10_percent():
    """qwen3_5_b300_sglang_bf16_agg_8192x1024_c8_cfg739 measures 359.9 ms to the first token and 10.05 ms a token. The
    generator's mixed chunks and AIPerf's lock-step client (every user's 8k prompt at once) played 501.5 ms (+39 %); the
    script's client spreads the prompts over [0.8 x, x] and ten rounds, and plays 329.9 ms (-8.3 %)."""
    row = _row(BF16_TP4, isl="8192", silicon_ttft_ms="359.93", silicon_tpot_ms="10.047")
    r = simulate_row(row)
    assert r.num_requests == 80
    assert abs(r.ttft_s / 0.35993 - 1) < 0.10 and abs(r.tpot_s / 0.010047 - 1) < 0.05
    assert simulate_row(row, ClientOptions(benchmark_recipes=False)).ttft_s > 1.3 * 0.35993
