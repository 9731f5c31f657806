"""The SGLang B200 `nightly-dev` Qwen3.5-397B-A17B rows (BF16, TP 8, 4-64 users) play the InferenceMAX script that ran
them, `qwen3.5_bf16_b200.sh` as InferenceX pull request 758 left it (128 running requests, 32,768-token chunks and budget,
memory 0.82, the receive interval 10 / 30, 16-bit KV, the benchmark_serving client), with SGLang's own weight streaming
and the release's CPU time per step and front end refitted on that play (docs/fidelity-history.md, q35rel22)."""

from __future__ import annotations

import pytest

from servesim.validation.inferencemax import recipe
from servesim.validation.run import simulate_row
from servesim.validation.silicon import ClientOptions, parse_row, played_row, row_scenario, scenario_perf_model
from tests.validation.test_silicon_mapping import BASE

QWEN_BF16 = {**BASE, "backend": "sglang", "backend_version": "nightly-dev", "model_path": "Qwen/Qwen3.5-397B-A17B",
             "system": "b200_sxm", "precision": "bf16", "gemm_quant_mode": "", "moe_quant_mode": "", "tp_size": "8",
             "moe_tp_size": "8", "moe_ep_size": "1", "isl": "8192", "osl": "1024", "concurrency": "16", "batch_size": "16"}


def nightly(**changes):
    return parse_row({**QWEN_BF16, **changes})


def sched(s) -> dict:
    return s.scheduler.model_dump()


@pytest.mark.parametrize(("isl", "osl", "users", "interval"), [
    ("1024", "1024", "4", 10), ("1024", "8192", "8", 10), ("8192", "1024", "16", 30), ("1024", "1024", "64", 30)])
def test_the_rows_play_the_script_and_its_client(isl, osl, users, interval):
    s = row_scenario(nightly(isl=isl, osl=osl, concurrency=users, batch_size=users))
    assert (sched(s)["max_running_requests"], sched(s)["chunked_prefill_size"], sched(s)["max_prefill_tokens"]) == (128, 32768, 32768)
    assert sched(s)["enable_mixed_chunk"] is False and sched(s)["scheduler_recv_interval"] == interval
    assert (s.engine.max_num_seqs, s.engine.gpu_memory_utilization) == (128, 0.82)
    assert scenario_perf_model(s).kv_cache_dtype == "bf16"  # no --kv-cache-dtype: auto keeps BF16 weights' 16 bits
    assert s.workload.num_requests == 10 * int(users) and s.workload.arrival.warmup_requests == 0
    assert s.workload.lengths.prompt_tokens == (int(int(isl) * 0.8), int(isl))


@pytest.mark.parametrize("changes", [
    {"concurrency": "128", "batch_size": "128"},  # the sweep stops at 64 users
    {"tp_size": "4", "moe_tp_size": "4"},  # TP 8 only
    {"backend_version": "0.5.9", "gemm_quant_mode": "fp8", "concurrency": "32", "batch_size": "32"},  # 0.5.9's TP 8: 4-16 users
])
def test_rows_outside_the_sweep_keep_the_generator_deployment(changes):
    row = nightly(**changes)
    assert recipe(played_row(row)) is None
    assert "scheduler_recv_interval" not in row_scenario(row).scheduler.model_fields_set


def test_the_release_constants_and_front_end():
    """SGLang's weight streaming (the script's flashinfer_trtllm runner is not played as TensorRT-LLM's for this BF16
    build), 8 ms of CPU a step for this release only (0.5.9 keeps the (GPU, engine) 9 ms), the front end's 0.135 s."""
    s = row_scenario(nightly())
    c = scenario_perf_model(s).constants
    assert (c.eta_memory, c.step_overhead_s, c.layer_floor_s) == (0.51, 0.008, 4.0e-05)
    assert scenario_perf_model(row_scenario(nightly(backend_version="0.5.9", gemm_quant_mode="fp8"))).constants.step_overhead_s == 0.009
    assert s.frontend.profile == "sglang@b200@nightly-dev" and s.frontend.constants()[2] == 0.135


def test_the_script_brings_the_16_user_8k_first_token_to_the_measurement():
    """2026_03_25_qwen3_5_397b_b200_sxm_sglang_bf16_agg_8192x1024_c16 measures a 577 ms first token and 13.08 ms a token;
    the generator's lock-step client (every user's 8k prompt at once, 4 rounds) played 955 ms. The script plays 655 ms
    (+13.5 %) since the overlap loop's take (sgadm28: this row later, the release's 60 rows 6.8 -> 5.3 %)."""
    row = nightly(silicon_ttft_ms="577.4509", silicon_tpot_ms="13.0810")
    r = simulate_row(row)
    assert r.num_requests == 160
    assert abs(r.ttft_s / 0.5775 - 1) < 0.15 and abs(r.tpot_s / 0.01308 - 1) < 0.05
    assert simulate_row(row, ClientOptions(benchmark_recipes=False)).ttft_s > 1.4 * 0.5775


@pytest.mark.parametrize(("tp", "ep", "users"), [("8", "1", "16"), ("4", "4", "128")])
def test_the_release_fp8_rows_play_their_script_with_the_release_prompt_price(tp, ep, users):
    """B200 0.5.9's FP8 rows (TP 8 at 4-16 users, TP 4 x EP 4 at 4-128) play `qwen3.5_fp8_b200.sh` (FP8 KV, the
    trtllm kernels), with the release's flat GPU time per prompt token (18 us) and front end (0.13 s) fitted with it
    (docs/fidelity-history.md, sgb27); the nightly build keeps neither."""
    row = nightly(backend_version="0.5.9", gemm_quant_mode="fp8", tp_size=tp, moe_tp_size="1" if ep != "1" else tp,
                  moe_ep_size=ep, concurrency=users, batch_size=users)
    r = recipe(played_row(row))
    assert r is not None and r.kernels == "trtllm" and r.scheduler["max_prefill_tokens"] == 32768
    s = row_scenario(row)
    assert scenario_perf_model(s).kv_cache_dtype == "fp8" and scenario_perf_model(s).constants.prompt_token_gpu_s == 1.8e-05
    # the front end's serial time per prompt token 0 since the rows play the overlap loop's take (sgadm29)
    assert s.frontend.profile == "sglang@b200@0.5.9" and s.frontend.constants()[1:] == (0.0, 0.13)
    assert scenario_perf_model(row_scenario(nightly())).constants.prompt_token_gpu_s == 0.0


@pytest.mark.parametrize(("version", "share"), [("nightly-dev", 1.0), ("0.5.9", 0.0)])
def test_the_overlap_loop_holds_first_tokens_for_the_whole_next_prefill(version, share):
    # issue 14 sgovl27: the build's prefill batches hand out their first tokens once the next prefill batch's launch
    # returns, which Qwen3.5's first Gated DeltaNet layer (a host read of its chunk lengths) puts after the batch
    # before it ends: fitted at the whole next step (1.0) on the rows outside held_out_ids; 0.5.9 is not keyed
    s = row_scenario(nightly(backend_version=version))
    assert getattr(s.scheduler, "consecutive_prefill_launch_share", 0.0) == share


def test_the_overlap_loop_takes_arrivals_as_a_prompt_step_starts():
    # issue 14 sgadm28: the script runs `event_loop_overlap`, so the receive interval's take after a prompt step comes at
    # its start; B200 0.5.9's plain script runs the same loop and is played so since sgadm29
    assert sched(row_scenario(nightly()))["overlap_loop_take"] is True
    release = row_scenario(nightly(backend_version="0.5.9", gemm_quant_mode="fp8", concurrency="8", batch_size="8"))
    assert sched(release)["scheduler_recv_interval"] > 1 and sched(release)["overlap_loop_take"] is True
