"""vLLM Blackwell rows as InferenceMAX's scripts ran them (docs/fidelity-history.md, vbw20): the B200 0.17.0 Kimi-K2.5 rows
recorded at TP 4 EP 1 play `kimik2.5_fp4_b200.sh` of 2026-04-20 (budget 2 x ISL, FP8 KV cache, its client); the
Kimi-K2.5 rows recorded at TP 4 EP 4 keep AIPerf's play but split every expert over TP 4, since no Kimi script passes
`--enable-expert-parallel`; the B300 nightly build has its own front end. The rows of the earlier revision (TP 4 EP 4 and
TP 8) play it (kimi22): vLLM's 8,192-token budget, `--max-num-seqs CONC` and so CUDA graphs to 2 x CONC tokens only;
the steps above that size add the release's graph-less launch time to their GPU time (v017_24)."""

from __future__ import annotations

import pytest

from servesim.replica.frontend import profile_name
from servesim.validation.inferencemax import recipe
from servesim.validation.silicon import parse_row, played_row, row_scenario, scenario_perf_model
from tests.validation.test_silicon_mapping import BASE

KIMI = {**BASE, "backend_version": "0.17.0", "model_path": "moonshotai/Kimi-K2.5", "precision": "fp4",
        "gemm_quant_mode": "nvfp4", "moe_quant_mode": "nvfp4", "osl": "1024", "concurrency": "16", "batch_size": "16",
        "tp_size": "4", "moe_tp_size": "4", "moe_ep_size": "1"}


def kimi(**changes):
    return parse_row({**KIMI, **changes})


@pytest.mark.parametrize(("isl", "users", "budget"), [("1024", "64", 2048), ("8192", "32", 16384)])
def test_the_april_20_script_plays_its_flags_and_client(isl, users, budget):
    s = row_scenario(kimi(isl=isl, concurrency=users, batch_size=users))
    assert s.engine.max_num_batched_tokens == budget  # --max-num-batched-tokens $((ISL * 2))
    assert (s.engine.gpu_memory_utilization, s.engine.block_size, s.perf.kv_cache_dtype) == (0.90, 16, "fp8")
    assert s.workload.num_requests == 10 * int(users) and s.workload.arrival.warmup_requests == 0
    assert s.workload.lengths.prompt_tokens == (int(int(isl) * 0.8), int(isl))
    assert not s.perf.expert_parallel
    assert s.perf.cudagraph_max_tokens == 2048 and s.engine.max_num_seqs == int(users)


@pytest.mark.parametrize(("changes", "users"), [
    ({"moe_tp_size": "1", "moe_ep_size": "4", "osl": "8192"}, 16),  # the config's EP 4, every shape, 4-64 users
    ({"moe_tp_size": "1", "moe_ep_size": "4", "isl": "8192"}, 64),
    ({"tp_size": "8", "moe_tp_size": "8"}, 4),  # TP 8 at 4 users (the 04-20 `_cfg636` rows record the same columns)
])
def test_the_earlier_script_plays_vllm_defaults_and_graphs_to_twice_the_users(changes, users):
    row = kimi(**changes, concurrency=str(users), batch_size=str(users))
    s = row_scenario(row)
    assert s.engine.max_num_batched_tokens == 8192 and s.engine.max_num_seqs == users  # no budget flag, --max-num-seqs CONC
    assert (s.engine.gpu_memory_utilization, s.engine.block_size, s.perf.kv_cache_dtype) == (0.90, 16, "auto")
    assert s.perf.cudagraph_max_tokens == 2 * users  # min(2 x max_num_seqs, 512)
    assert s.workload.num_requests == 10 * users and s.workload.lengths.prompt_tokens == (int(row.isl * 0.8), row.isl)
    assert not s.perf.expert_parallel
    # the release's graph-less launches: a prompt step (above 2 x CONC tokens) adds 61 layers x 1.4 ms to its GPU
    # time, an 8k one as much as a 1k one (not a floor that the 8k step's GPU work hides); a decode adds nothing
    pm = scenario_perf_model(s)
    graphed = scenario_perf_model(s.model_copy(update={"perf": s.perf.model_copy(update={"cudagraph_max_tokens": 0})}))
    for prompt in (1024, 8192):
        assert pm.step_breakdown([(prompt, 0)], []).gpu_s == pytest.approx(
            graphed.step_breakdown([(prompt, 0)], []).gpu_s + 61 * 1.4e-3, rel=1e-12)
    assert pm.step_time_s([], [2000] * users) == graphed.step_time_s([], [2000] * users)


@pytest.mark.parametrize("changes", [
    {"isl": "8192", "concurrency": "64", "batch_size": "64"},  # 8k/1k ran to 32 users
    {"osl": "8192"},  # the 1k/8k shape was dropped before that date
    {"tp_size": "8", "moe_tp_size": "8", "isl": "8192"},  # TP 8 ran at 4 users only
    {"moe_tp_size": "1", "moe_ep_size": "4", "concurrency": "128", "batch_size": "128"},  # the earlier sweep's top: 64
    {"system": "b300_sxm"}, {"backend_version": "0.19.0"},
])
def test_rows_outside_it_keep_the_generator_deployment(changes):
    row = kimi(**changes)
    assert recipe(played_row(row)) is None
    s = row_scenario(row)
    assert s.engine.max_num_batched_tokens == row.batch_size + row.isl + 1500 and s.workload.lengths.prompt_tokens == row.isl


@pytest.mark.parametrize("system", ["b200_sxm", "b300_sxm"])
def test_kimi_rows_recorded_at_ep_4_split_their_experts_over_tp(system):
    ep4 = row_scenario(kimi(system=system, moe_tp_size="1", moe_ep_size="4"))
    assert (ep4.perf.expert_parallel, ep4.perf.moe_tp_size, ep4.perf.moe_ep_size) == (False, None, None)
    # B200: the earlier script (its client and flags); B300 0.17.0: no script read, AIPerf's play
    assert (recipe(played_row(kimi(system=system, moe_tp_size="1", moe_ep_size="4"))) is None) == (system == "b300_sxm")
    # priced as the same release's TP 4 row (B300 0.17.0: no script), not as all-EP
    ctxs = [1536] * 16
    tp4 = scenario_perf_model(row_scenario(kimi(system="b300_sxm"))).step_time_s([], ctxs)
    as_ep = scenario_perf_model(ep4.model_copy(update={"perf": ep4.perf.model_copy(update={"expert_parallel": True})}))
    if system == "b300_sxm":
        assert scenario_perf_model(ep4).step_time_s([], ctxs) == tp4
    assert as_ep.step_time_s([], ctxs) != scenario_perf_model(ep4).step_time_s([], ctxs)
    minimax = row_scenario(parse_row(BASE))  # MiniMax-M2.5 0.19.0 TP 4 x EP 4: its script passes the flag
    assert minimax.perf.expert_parallel


def test_the_b300_nightly_build_has_its_own_front_end():
    nightly = row_scenario(parse_row({**BASE, "system": "b300_sxm", "backend_version": "nightly-5b8c30d62b754b57",
                                      "moe_tp_size": "4", "moe_ep_size": "1"}))
    assert nightly.frontend.profile == profile_name("vllm", "b300", "nightly-5b8c30d62b754b57") == \
        "vllm@b300@nightly-5b8c30d62b754b57"
    request_s, prompt_token_s, latency_s = nightly.frontend.constants()[:3]
    assert (request_s, prompt_token_s, latency_s) == (0.002, 2.0e-06, 0.015)
    assert profile_name("vllm", "b300", "0.17.0") == "vllm@b300"  # other releases without a profile: the GPU's
