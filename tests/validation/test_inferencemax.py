"""TensorRT-LLM rows measured by InferenceMAX's scripts play those scripts' flags and client (exact)."""

from __future__ import annotations

from servesim.replica.schedulers.trtllm import TRTLLMParams
from servesim.scenario import validate_scenario
from servesim.simulation import simulate
from servesim.validation.silicon import ClientOptions, parse_row, row_scenario, scenario_perf_model
from tests.validation.test_silicon_mapping import BASE

LLAMA_H200 = {**BASE, "backend": "trtllm", "backend_version": "", "model_path": "meta-llama/Llama-3.1-70B",
              "system": "h200_sxm", "moe_ep_size": "1", "tp_size": "4", "batch_size": "16", "concurrency": "16",
              "isl": "1024", "osl": "1024"}


def waits(s) -> tuple:
    """The scenario's batch-waiting flags (scheduler fields left unset are TensorRT-LLM's defaults, 0)."""
    extra = s.scheduler.model_dump()
    return extra.get("batch_wait_timeout_iters", 0), extra.get("batch_wait_max_tokens_ratio", 0.0)


def scenario(options: ClientOptions = ClientOptions(), **changes):
    return row_scenario(parse_row({**LLAMA_H200, **changes}), options, calibration=None)


def test_llama70b_h200_plays_the_70b_script_and_its_client():
    s = scenario()
    assert s.engine.max_num_batched_tokens == 16384  # --max_num_tokens 16384, not batch + isl + 1,500
    assert waits(s) == (20, 0.9)  # 1k/1k, tp < 8
    assert s.workload.num_requests == 160 and s.workload.arrival.warmup_requests == 0  # --num-prompts CONC * 10
    assert (s.workload.lengths.prompt_tokens, s.workload.lengths.output_tokens) == ((819, 1024), (819, 1024))
    assert s.scheduler.model_dump()["enable_chunked_context"] is False


def test_batch_waiting_only_where_the_script_sets_it():
    for changes in ({"osl": "8192"}, {"isl": "8192"}, {"tp_size": "8"}):
        s = scenario(**changes)
        assert waits(s) == (0, 0.0)
        assert s.engine.max_num_batched_tokens == 16384 and s.workload.num_requests == 160


def test_other_rows_and_the_switch_keep_the_generator_deployment():
    off = scenario(ClientOptions(benchmark_recipes=False))
    assert off.engine.max_num_batched_tokens == 2560  # batch + prompt + 1,500 = 2,540, up to 32-token blocks
    assert waits(off) == (0, 0.0) and off.workload.num_requests == 64 + 16  # AIPerf's client: 4 rounds + 1 trailing
    assert off.workload.lengths.prompt_tokens == 1024
    # (DeepSeek-R1 on H200 without a release is InferenceMAX's plain script: test_dsr1_h200_scripts.py)
    # (the DeepSeek-R1 H200 rows recording 1.1.0rc2.post2 play its MTP script: test_dsr1_h200_scripts.py)
    for changes in ({"backend_version": "1.1.0rc2.post2"}, {"system": "b200_sxm"}, {"backend": "vllm"}):
        s = scenario(**changes)
        assert s.workload.num_requests == 64 + 16 and s.workload.lengths.prompt_tokens == 1024, changes


def test_batch_waiting_delays_the_first_tokens_and_lengths_vary():
    # The same 1k/1k run with the script's batch waiting and without it: later prompts wait for up
    # to 20 iterations while the others decode, so the mean TTFT rises (the measured 1k/1k runs
    # below TP 8 are slower to the first token than the 1k/8k ones, where the script leaves it off).
    waiting = scenario(ClientOptions(frontend=False), concurrency="4", batch_size="4")
    data = waiting.model_dump()
    data["scheduler"].update(batch_wait_timeout_iters=0, batch_wait_max_tokens_ratio=0.0)
    plain = validate_scenario(data, "no waiting")

    def mean_ttft(s):
        reqs = simulate(s).requests
        assert len({r.prompt_len for r in reqs}) > 1 and len({r.output_len for r in reqs}) > 1
        assert all(819 <= r.prompt_len <= 1024 and 819 <= r.output_len <= 1024 for r in reqs)
        return sum(r.first_token_s - r.arrival_s for r in reqs) / len(reqs)

    assert waits(waiting) == (20, 0.9)
    assert mean_ttft(waiting) > 1.5 * mean_ttft(plain)


GPTOSS_B200 = {**LLAMA_H200, "model_path": "openai/gpt-oss-120b", "system": "b200_sxm", "gemm_quant_mode": "nvfp4",
               "tp_size": "2", "moe_tp_size": "2", "moe_ep_size": "1", "backend_version": "1.2.0rc2.post2"}  # the generator's


def test_gptoss_b200_plays_the_gptoss_script_where_no_release_constants_were_fitted_without_it():
    for version in ("", "1.2.0rc2"):
        s = row_scenario(parse_row({**GPTOSS_B200, "backend_version": version}), calibration=None)
        assert s.engine.max_num_batched_tokens == 20000, version  # --max_num_tokens 20000
        assert waits(s) == (0, 0.0) and s.scheduler.model_dump()["enable_chunked_context"] is False
        assert s.workload.num_requests == 160  # --num-prompts CONC * 10
        assert s.workload.lengths.prompt_tokens == (819, 1024)
    # another release, another system or the switch off: the generator's budget and AIPerf's client
    # (1.2.0rc2.post2 ran the script too, but its release constants were fitted on the generator's flags)
    for changes, options in (({"backend_version": "1.2.0rc6.post3"}, ClientOptions()), ({"system": "h200_sxm"}, ClientOptions()),
                             ({}, ClientOptions()), ({"backend_version": ""}, ClientOptions(benchmark_recipes=False))):
        s = row_scenario(parse_row({**GPTOSS_B200, **changes}), options, calibration=None)
        assert s.engine.max_num_batched_tokens == 2560 and s.workload.num_requests == 64 + 16, changes


def test_gptoss_b200_script_rows_overlap_the_cpu_and_keep_their_attention_dp_balance():
    # every image gptoss_fp4_b200_trt*.sh ran is a release from 1.0 (trtllm-serve --backend=pytorch, overlap
    # scheduler on): the rows without a release play it too, not the base profile's serial CPU
    no_release = row_scenario(parse_row({**GPTOSS_B200, "backend_version": ""}), calibration=None)
    assert no_release.perf.overrides == {"overlap_cpu": 1.0}
    assert scenario_perf_model(no_release)._overlap
    other = row_scenario(parse_row({**GPTOSS_B200, "backend_version": "", "model_path": "deepseek-ai/DeepSeek-R1"}),
                         calibration=None)
    assert not scenario_perf_model(other)._overlap  # another model without a release: the base profile
    # with DP_ATTENTION the script writes attention_dp_config {enable_balance: true}: 1.2.0rc2's attention-DP rows
    # (which play this script) keep it, as 1.2.0rc2.post2's (the attention-DP recipe) do
    for version in ("1.2.0rc2", "1.2.0rc2.post2"):
        dp = row_scenario(parse_row({**GPTOSS_B200, "backend_version": version, "tp_size": "1", "attention_dp_size": "4",
                                     "moe_tp_size": "4", "batch_size": "8", "concurrency": "32"}), calibration=None)
        assert dp.scheduler.model_dump().get("attention_dp_enable_balance") is True, version
        assert dp.engine.max_num_batched_tokens == 20000, version
    assert "attention_dp_enable_balance" not in row_scenario(parse_row({**GPTOSS_B200, "backend_version": "1.2.0rc2"}),
                                                             calibration=None).scheduler.model_dump(exclude_unset=True)


DSR1_DP = {**BASE, "backend": "trtllm", "backend_version": "1.1.0rc2.post2", "model_path": "deepseek-ai/DeepSeek-R1",
           "system": "b200_sxm", "tp_size": "1", "attention_dp_size": "8", "moe_tp_size": "1", "moe_ep_size": "8",
           "batch_size": "8", "concurrency": "64", "isl": "1024", "osl": "1024", "gemm_quant_mode": "nvfp4"}


def balance(s) -> tuple:
    extra = s.scheduler.model_dump()
    return (extra.get("attention_dp_enable_balance"), extra.get("attention_dp_timeout_iters"),
            extra.get("attention_dp_batching_wait_iters"))


def test_trtllm_attention_dp_rows_play_the_scripts_balance_budget_and_client():
    s = row_scenario(parse_row(DSR1_DP), calibration=None)
    assert balance(s) == (True, 60, 0)  # attention_dp_config of dsr1_*_trt*.sh
    assert s.engine.max_num_batched_tokens == 1152  # (64 + 1024 + 64 + 63) // 64 * 64, per rank
    assert s.workload.num_requests == 640 and s.workload.lengths.prompt_tokens == (819, 1024)
    newer = row_scenario(parse_row({**DSR1_DP, "backend_version": "1.2.0rc6.post2"}), calibration=None)
    assert newer.engine.max_num_batched_tokens == 8192  # at least 8,192 from the 1.2.0rc6 images
    mtp = row_scenario(parse_row({**DSR1_DP, "backend_version": "1.2.0rc6.post3"}), calibration=None)
    assert mtp.engine.num_speculative_tokens == 1 and balance(mtp) == (True, 60, 0)  # the MTP script: MTP 1 with DP
    assert mtp.engine.max_num_batched_tokens == 1152  # (2 x 8 + 1,024 + 64 + 63) // 64 * 64, no floor
    oss = row_scenario(parse_row({**DSR1_DP, "model_path": "openai/gpt-oss-120b", "attention_dp_size": "4",
                                  "moe_ep_size": "4", "batch_size": "16"}), calibration=None)
    # gptoss_fp4_b200_trt.sh: enable_balance only, TensorRT-LLM's AttentionDpConfig defaults for the rest
    assert balance(oss) == (True, None, None) and oss.engine.max_num_batched_tokens == 20000
    defaults = TRTLLMParams()
    assert (defaults.attention_dp_timeout_iters, defaults.attention_dp_batching_wait_iters) == (50, 10)
    for changes in ({"attention_dp_size": "1", "tp_size": "8"}, {"backend": "vllm"}, {"system": "gb200"}):
        other = row_scenario(parse_row({**DSR1_DP, **changes}), calibration=None)
        assert not balance(other)[0], changes
