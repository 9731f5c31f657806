"""vLLM rows measured by InferenceMAX's vLLM scripts (Kimi-K2.5 B200 / B300 / H200, MiniMax-M2.5 B200 0.17.0 and
the nightly image) play that script's `vllm serve` flags and its client (benchmark_serving: ten requests per user,
lengths over [0.8 x, x]), only inside the config's sweep; every other vLLM row keeps the generator's deployment."""

from __future__ import annotations

from servesim.simulation import simulate
from servesim.validation.inferencemax import recipe
from servesim.validation.run import client_metrics
from servesim.validation.silicon import ClientOptions, parse_row, played_row, row_scenario
from tests.validation.test_silicon_mapping import BASE

# a Kimi-K2.5 B200 0.17.0 row as InferenceMAX's export records the config's `tp: 4, ep: 4`
KIMI = {**BASE, "backend_version": "0.17.0", "model_path": "moonshotai/Kimi-K2.5", "precision": "fp4",
        "gemm_quant_mode": "nvfp4", "moe_quant_mode": "nvfp4", "osl": "1024", "concurrency": "16", "batch_size": "16"}


def scenario(options: ClientOptions = ClientOptions(), **changes):
    return row_scenario(parse_row({**KIMI, **changes}), options)


def test_kimi_script_plays_its_flags_client_and_tp_experts():
    s = scenario()
    # kimik2.5_fp4_b200.sh passes no --enable-expert-parallel: the config's ep 4 ran the experts over TP 4
    assert (s.tp, s.perf.expert_parallel) == (4, False)
    assert s.engine.max_num_batched_tokens == 8192  # no --max-num-batched-tokens: vLLM's default on a B200
    assert (s.engine.gpu_memory_utilization, s.engine.max_num_seqs, s.perf.kv_cache_dtype) == (0.90, 16, "auto")
    assert s.workload.num_requests == 160 and s.workload.arrival.warmup_requests == 0  # CONC x 10, warm-up drained
    assert (s.workload.lengths.prompt_tokens, s.workload.lengths.output_tokens) == ((819, 1024), (819, 1024))


def test_the_later_revision_plays_its_own_flags():
    # the 2026-04-20 revision (ep 1): FP8 KV cache, --max-num-batched-tokens 2 x ISL
    s = scenario(isl="8192", moe_ep_size="1", moe_tp_size="4")
    assert (s.engine.max_num_batched_tokens, s.perf.kv_cache_dtype, s.perf.expert_parallel) == (16384, "fp8", False)


def test_minimax_017_script_runs_expert_parallel_at_every_ep():
    # minimaxm2.5_fp8_b200.sh of 0.17.0 tests `EP_SIZE -ge 1`: EP 1 rows ran --enable-expert-parallel
    s = row_scenario(parse_row({**BASE, "backend_version": "0.17.0", "tp_size": "2", "moe_tp_size": "2",
                                "moe_ep_size": "1", "osl": "1024", "concurrency": "16", "batch_size": "16"}))
    assert (s.tp, s.perf.expert_parallel, s.engine.block_size, s.engine.gpu_memory_utilization) == (2, True, 32, 0.95)
    assert s.engine.max_num_batched_tokens == 8192 and s.perf.kv_cache_dtype == "auto"


def test_rows_outside_the_scripts_keep_the_generator_deployment():
    for changes in ({"concurrency": "128", "batch_size": "128"},  # the sweep stops at 64 users
                    {"osl": "256"},  # not a shape of the sweep
                    {"backend_version": "0.15.1"}, {"system": "h100_sxm"}):
        row = parse_row({**KIMI, **changes})
        assert recipe(played_row(row)) is None, changes
        s = row_scenario(row)
        assert s.workload.lengths.prompt_tokens == row.isl and s.engine.max_num_batched_tokens == row.batch_size + row.isl + 1500
    minimax_019 = parse_row({**BASE, "osl": "1024", "concurrency": "16", "batch_size": "16"})
    assert recipe(played_row(minimax_019)) is None  # not this branch's rows
    off = scenario(ClientOptions(benchmark_recipes=False))
    assert off.workload.lengths.prompt_tokens == 1024 and off.engine.max_num_batched_tokens == 16 + 1024 + 1500


def test_varied_lengths_break_the_lock_step_wave():
    # fixed lengths keep the 16 users in one wave every round (every round's prompts arrive together and
    # queue behind each other); over [0.8 x, x] the users fall out of step and fewer prompts queue at once
    script = scenario()
    lengths = script.workload.lengths.model_copy(update={"prompt_tokens": 1024, "output_tokens": 1024})
    fixed = script.model_copy(update={"workload": script.workload.model_copy(update={"lengths": lengths})})
    (varied_ttft, _, n), (fixed_ttft, _, _) = (client_metrics(simulate(s).requests) for s in (script, fixed))
    assert n == 160
    assert varied_ttft < 0.8 * fixed_ttft
