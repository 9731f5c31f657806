"""How rows of the silicon sample map to scenarios, or to the reason they cannot (exact)."""

from __future__ import annotations

from pathlib import Path

import pytest

from servesim.errors import InputError
from servesim.validation.silicon import ClientOptions, inexpressible_reason, parse_row, read_rows, row_scenario

BASE = {
    "id": "r1", "backend": "vllm", "backend_version": "0.19.0", "model_path": "MiniMaxAI/MiniMax-M2.5",
    "system": "b200_sxm", "precision": "fp8", "mode": "agg", "isl": "1024", "osl": "256", "gemm_quant_mode": "fp8",
    "moe_quant_mode": "fp8", "batch_size": "64", "tp_size": "4", "pp_size": "1", "attention_dp_size": "1",
    "moe_tp_size": "1", "moe_ep_size": "4", "silicon_ttft_ms": "120.5", "silicon_tpot_ms": "12.25", "concurrency": "64",
}

# The NVFP4 checkpoint of BASE's model: its InferenceMAX scripts run attention DP, so rows recorded with it stay DP.
NVFP4 = {"precision": "fp4", "gemm_quant_mode": "nvfp4", "moe_quant_mode": "nvfp4"}


def row(**changes):
    return parse_row({**BASE, **changes})


def test_row_maps_to_closed_loop_scenario():
    s = row_scenario(row(), ClientOptions(requests_per_user=4, warmup_per_user=1, ramp_up_s=2.0, warmup_drains=False),
                     calibration=None)
    assert (s.model, s.gpu, s.tp, s.dtype) == ("MiniMaxAI/MiniMax-M2.5", "b200", 4, "fp8")
    assert s.perf.engine == "vllm" and s.perf.expert_parallel is True
    assert s.scheduler.name == "vllm" and s.frontend.profile == "vllm@b200@0.19.0"  # the release's own profile
    a = s.workload.arrival
    assert (a.process, a.users, a.think_time_s, a.ramp_up_s, a.warmup_requests) == ("closed", 64, 0.0, 2.0, 64)
    assert (s.workload.lengths.prompt_tokens, s.workload.lengths.output_tokens) == (1024, 256)
    assert s.workload.num_requests == 64 + 256 + 64  # warm-up, measured, one trailing round
    assert s.engine.max_num_seqs == 64 and s.engine.enable_prefix_caching is False


def test_warmup_that_drains_is_a_fresh_start():
    # AIPerf's profiling phase starts all users at once on an idle engine: no warm-up simulated
    s = row_scenario(row(), ClientOptions(requests_per_user=4, warmup_per_user=1), calibration=None)
    assert s.workload.arrival.warmup_requests == 0 and s.workload.num_requests == 256 + 64
    small = row_scenario(row(concurrency="2", batch_size="2"), calibration=None)
    assert small.workload.num_requests == 32 + 2  # at least min_requests, then the trailing round


def test_engine_limits_of_the_benchmark_deployments():
    # token budget = batch + prompt + 1500 (TensorRT-LLM: rounded up to 32-token blocks)
    assert row_scenario(row(), calibration=None).engine.max_num_batched_tokens == 64 + 1024 + 1500
    trt = row_scenario(row(backend="trtllm", batch_size="101", concurrency="101"), calibration=None)
    assert trt.engine.max_num_batched_tokens == 2656 and trt.engine.max_num_seqs == 101  # 2625 -> 83 blocks
    # the generator's TensorRT-LLM: chunked context off, GUARANTEED_NO_EVICT, 32-token KV blocks
    assert trt.scheduler.name == "trtllm" and trt.engine.block_size == 32
    trt_params = trt.scheduler.params()
    assert trt_params.enable_chunked_context is False and trt_params.capacity_scheduler_policy == "GUARANTEED_NO_EVICT"
    sg = row_scenario(row(backend="sglang"), calibration=None)
    assert sg.engine.max_num_batched_tokens == 16384 and sg.scheduler.params().enable_mixed_chunk is False
    mixed = row_scenario(row(backend="sglang", system="h200_sxm"), calibration=None).scheduler.params()
    assert mixed.enable_mixed_chunk is True and mixed.max_prefill_tokens == 1024 + 1500
    # SGLang's chunked_prefill_size by GPU memory: 8,192 below 160 GiB, 16,384 above
    chunk = {system: row_scenario(row(backend="sglang", system=system), calibration=None).scheduler.params().chunked_prefill_size
             for system in ("h100_sxm", "h200_sxm", "b200_sxm", "b300_sxm", "gb200")}
    assert chunk == {"h100_sxm": 8192, "h200_sxm": 8192, "b200_sxm": 16384, "b300_sxm": 16384, "gb200": 16384}
    assert mixed.chunked_prefill_size == 8192 and row_scenario(row(), calibration=None).scheduler.name == "vllm"


def test_measured_values_in_seconds():
    r = row()
    assert (r.ttft_s, r.tpot_s) == (pytest.approx(0.1205), pytest.approx(0.01225))


def test_engines_and_dtypes():
    assert row_scenario(row(backend="trtllm"), calibration=None).scheduler.name == "trtllm"
    assert row_scenario(row(backend="sglang"), calibration=None).scheduler.name == "sglang"
    assert row_scenario(row(gemm_quant_mode="nvfp4"), calibration=None).dtype == "fp4"
    # no FP4 tensor cores on Hopper: the 4-bit checkpoint runs weight-only
    assert row_scenario(row(gemm_quant_mode="nvfp4", system="h200_sxm"), calibration=None).dtype == "int4"
    assert row_scenario(row(gemm_quant_mode="", moe_tp_size="4", moe_ep_size="1"), calibration=None).dtype == "bf16"
    dense = row(model_path="meta-llama/Llama-3.1-8B-Instruct", system="h100_sxm", tp_size="2", moe_tp_size="0", moe_ep_size="0")
    assert inexpressible_reason(dense) is None
    assert row_scenario(dense, calibration=None).perf.expert_parallel is False


def test_mixed_moe_tp_by_ep_row_maps_to_its_sizes():
    # attention_dp_size empty: recorded in AIConfigurator's terms (tp 4 = MoE 2 x 2), not as the
    # engine's tp x ep product (validation/recorded_parallelism.py)
    r = row(moe_tp_size="2", moe_ep_size="2", attention_dp_size="")
    assert inexpressible_reason(r) is None
    p = row_scenario(r, calibration=None).perf
    assert (p.expert_parallel, p.moe_tp_size, p.moe_ep_size, p.moe_a2a_backend) == (False, 2, 2, "none")
    all_ep = row_scenario(row(), calibration=None).perf
    assert (all_ep.expert_parallel, all_ep.moe_tp_size, all_ep.moe_ep_size) == (True, None, None)
    # no attention DP: the MoE output is all-reduced over the TP group, no all-to-all
    assert all_ep.moe_a2a_backend == "none"


@pytest.mark.parametrize("changes, reason", [
    ({"mode": "disagg"}, "disaggregated: played separately by benchmarks/bench_silicon_disagg.py (docs/disaggregation.md)"),
    ({"attention_dp_size": "4", "moe_ep_size": "16", **NVFP4}, "attention DP over 16 GPUs (tp 4 x dp 4) spans several nodes: multi-node replicas are not modelled"),
    ({"attention_dp_size": "2"}, "MoE TP 1 x EP 4 does not cover tp 4 x attention DP 2"),
    ({"tp_size": "64"}, "tp 64 spans several NVLink domains of 8 GPUs: multi-node replicas are not modelled"),
    ({"moe_tp_size": "1", "moe_ep_size": "2"}, "MoE TP 1 x EP 2 does not cover tp 4"),
    ({"concurrency": ""}, "the client concurrency is not recorded"),
    ({"system": "gb300"}, "GPU gb300 is not in the catalogue"),
    ({"pp_size": "2"}, "pipeline parallelism in the measured file is not mapped"),
])
def test_inexpressible_reasons(changes, reason):
    assert inexpressible_reason(row(**changes)) == reason


def test_attention_dp_row_maps_to_dp_ranks():
    # vLLM tp 2 x dp 2 with the experts over all 4 GPUs; batch_size is per rank (x dp = concurrency). NVFP4: the FP8
    # MiniMax scripts pass no data-parallel flag (test_vllm_minimax_recorded_dp.py)
    r = row(tp_size="2", attention_dp_size="2", moe_ep_size="4", batch_size="32", concurrency="64", **NVFP4)
    assert inexpressible_reason(r) is None
    s = row_scenario(r, calibration=None)
    p = s.perf
    assert (s.tp, p.data_parallel_size, p.moe_tp_size, p.moe_ep_size, p.expert_parallel) == (2, 2, 1, 4, False)
    assert s.engine.max_num_seqs == 32 and s.engine.max_num_batched_tokens == 32 + 1024 + 1500
    assert s.workload.arrival.users == 64


def test_unknown_model_reason_names_the_catalogue():
    assert inexpressible_reason(row(model_path="acme/unknown-7b")).startswith("unknown model 'acme/unknown-7b'; allowed: ")


def test_read_rows_errors(tmp_path: Path):
    with pytest.raises(InputError, match="not found"):
        read_rows(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("id,backend\nx,vllm\n")
    with pytest.raises(InputError, match="missing column 'backend_version'"):
        read_rows(bad)
    broken = tmp_path / "broken.csv"
    broken.write_text(",".join(BASE) + "\n" + ",".join({**BASE, "isl": "many"}.values()) + "\n")
    with pytest.raises(InputError, match=r"broken.csv:2: bad value"):
        read_rows(broken)


def test_frontend_profile_falls_back_to_the_engine():
    from servesim.replica.frontend import FrontendConfig

    assert row_scenario(row(system="h200_sxm"), calibration=None).frontend.profile == "vllm@h200"
    assert row_scenario(row(), ClientOptions(frontend=False), calibration=None).frontend.profile == "none"
    # the per-system profile overrides the engine's constants
    assert FrontendConfig(profile="vllm@h200").constants() != FrontendConfig(profile="sglang").constants()


def test_row_version_reaches_the_perf_section_and_the_front_end():
    from servesim.replica.frontend import profile_name

    s = row_scenario(row(backend_version="0.18.0", system="h200_sxm"), calibration=None)
    assert s.perf.engine_version == "0.18.0"
    # most specific profile first: <engine>@<gpu>@<version>, then <engine>@<gpu>, then <engine>
    assert profile_name("vllm", "h200", "0.18.0") == "vllm@h200@0.18.0"
    assert profile_name("vllm", "h200", "0.0.1") == "vllm@h200"
    assert profile_name("vllm", "h200", "") == "vllm@h200"
    assert profile_name("vllm", "no-such-gpu", "0.18.0") == "vllm"
    assert profile_name("VLLM", "", "") == "vllm"


def test_vllm_async_releases_take_their_per_step_time_on_the_gpu():
    # vLLM runs async scheduling by default from 0.14.0 (engines.yaml): the shipped serving constants of such a
    # release keep its per-step time as GPU time per layer, and earlier / unversioned rows stay synchronous
    from servesim.validation.silicon import scenario_perf_model

    sync = scenario_perf_model(row_scenario(row(backend_version="", system="b200_sxm")))
    assert sync.constants.overlap_cpu == 0
    for system in ("b200_sxm", "b300_sxm"):
        c = scenario_perf_model(row_scenario(row(system=system))).constants  # 0.19.0, MiniMax-M2.5 FP8, 62 layers
        assert c.overlap_cpu == 1
        # the CPU time hides behind a GPU step that carries it: the floor of every layer, plus on B200 FP8 the fused
        # MoE kernel's fixed time that every MiniMax layer's few-token step pays (moe_floor_s, vmmx29)
        assert (c.layer_floor_s + c.moe_floor_s) * 62 > c.step_overhead_s


def test_deployment_settings_per_system_and_version():
    # SGLang with the generator's mixed chunks: every H200 run, and the B300 runs of 0.5.10.post1 only
    def mixed(system, version):
        return row_scenario(row(backend="sglang", system=system, backend_version=version), calibration=None).scheduler.params().enable_mixed_chunk
    assert mixed("h200_sxm", "0.5.6.post2") and mixed("h200_sxm", "")
    assert mixed("b300_sxm", "0.5.10.post1") and not mixed("b300_sxm", "0.5.9") and not mixed("b200_sxm", "0.5.9")
    # ... with the generator's prefill budget (prompt + 1,500), except the H200 0.5.6.post2 campaign, whose runs
    # admitted more prompts a step than that allows: SGLang's own max_prefill_tokens (16,384)
    def budget(system, version):
        return row_scenario(row(backend="sglang", system=system, backend_version=version), calibration=None).scheduler.params().max_prefill_tokens
    assert budget("h200_sxm", "0.5.6.post2") == 16384 and mixed("h200_sxm", "0.5.6.post2")
    assert budget("h200_sxm", "glm5-hopper") == budget("h200_sxm", "") == budget("b300_sxm", "0.5.10.post1") == 1024 + 1500
    # vLLM runs that recorded no version on H100 / B200: warm-up in the same closed loop
    unversioned = row_scenario(row(system="h100_sxm", backend_version=""), calibration=None).workload.arrival
    versioned = row_scenario(row(system="h100_sxm", backend_version="0.18.0"), calibration=None).workload.arrival
    assert (unversioned.warmup_requests, versioned.warmup_requests) == (64, 0)
    assert row_scenario(row(system="h200_sxm", backend_version=""), calibration=None).workload.arrival.warmup_requests == 0


def test_unversioned_vllm_h100_runs_start_out_of_step():
    # OUT_OF_STEP: those users start evenly over one request's decode time; every other row at once
    from servesim.validation.silicon import decode_cycle_s

    unversioned = row(system="h100_sxm", backend_version="")
    s = row_scenario(unversioned, calibration=None)
    assert s.workload.arrival.ramp_up_s == pytest.approx(decode_cycle_s(s, unversioned)) and s.workload.arrival.ramp_up_s > 0
    assert row_scenario(row(system="h100_sxm", backend_version="0.18.0"), calibration=None).workload.arrival.ramp_up_s == 0.0
    assert row_scenario(row(system="b200_sxm", backend_version=""), calibration=None).workload.arrival.ramp_up_s == 0.0
    # an explicit ramp option wins
    assert row_scenario(unversioned, ClientOptions(ramp_cycles=0.0), calibration=None).workload.arrival.ramp_up_s == 0.0

