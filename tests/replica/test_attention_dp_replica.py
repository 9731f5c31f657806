"""A replica with attention data parallelism: ranks' own schedulers and KV caches, the engines'
request balancing, lock-step steps priced with the ranks' split."""

from __future__ import annotations

import pytest

from servesim.cluster.build import resolve_pools
from servesim.replica.attention_dp import AttentionDPScheduler, RanksKV
from servesim.scenario import validate_scenario
from servesim.simulation import simulate
from tests.factories import make_request


def _scenario(engine: str = "vllm", balance: str = "auto", users: int = 4, requests: int = 16, seqs: int = 8) -> dict:
    return {
        "model": "deepseek-v3", "gpu": "b200", "tp": 4, "dtype": "fp8",
        "perf": {"engine": engine, "data_parallel_size": 2, "moe_tp_size": 1, "moe_ep_size": 8,
                 "data_parallel_balance": balance},
        "engine": {"max_num_seqs": seqs, "max_num_batched_tokens": 4096},
        "scheduler": {"name": "vllm"},
        "workload": {"arrival": {"process": "closed", "users": users, "think_time_s": 0.0},
                     "lengths": {"prompt_tokens": 512, "output_tokens": 32}, "num_requests": requests},
    }


def _parts(**kw) -> AttentionDPScheduler:
    pool = resolve_pools(validate_scenario(_scenario(**kw), "test"))[0]
    sched, kv = pool.make_parts()
    assert isinstance(sched, AttentionDPScheduler) and isinstance(kv, RanksKV)
    assert [r.kv for r in sched.ranks] == kv.caches and len({id(c) for c in kv.caches}) == 2
    assert kv.num_gpu_blocks == 2 * pool.num_gpu_blocks  # each rank its own cache of the rank's capacity
    return sched


@pytest.mark.parametrize("engine, balance, prompts, ranks", [
    ("vllm", "auto", [512] * 5, [0, 1, 0, 1, 0]),  # least 4 x waiting + running, ties to rank 0
    ("sglang", "auto", [512] * 3, [0, 1, 0]),  # round robin
    # fewest active prompt tokens among ranks below the balanced count: the long prompt's rank
    # gets the next two short ones only once the count allows it
    ("trtllm", "auto", [4000, 100, 100, 100], [0, 1, 1, 0]),
])
def test_requests_go_to_ranks_as_the_engine_balances(engine, balance, prompts, ranks) -> None:
    sched = _parts(engine=engine, balance=balance)
    reqs = [make_request(i, p, 8) for i, p in enumerate(prompts)]
    for r in reqs:
        sched.add_request(r, 0.0)
    assert [sched.rank_of[r.id] for r in reqs] == ranks
    assert [r.num_waiting for r in sched.ranks] == [ranks.count(0), ranks.count(1)]


def test_each_rank_schedules_its_own_requests_and_the_step_is_priced_by_rank() -> None:
    sched = _parts()
    reqs = [make_request(i, 512, 8) for i in range(3)]
    for r in reqs:
        sched.add_request(r, 0.0)
    out = sched.schedule(0.0)
    assert sorted(r.id for r, _ in out.scheduled) == [0, 1, 2]
    assert [kv.num_blocks_of(0) > 0 for kv in sched.kv.caches] == [True, False]  # request 0 on rank 0 only
    assert [kv.num_blocks_of(1) > 0 for kv in sched.kv.caches] == [False, True]
    # the split travels with the step's output; the engine prices it with the lock-step model
    assert out.rank_batches == [([(512, 0), (512, 0)], []), ([(512, 0)], [])]


def test_closed_loop_run_finishes_everything_and_its_first_step_is_the_lockstep_price() -> None:
    scenario = validate_scenario(_scenario(users=4, requests=16), "test")
    res = simulate(scenario)
    assert sum(1 for r in res.requests if r.state.name == "FINISHED") == 16
    # the 4 users arrive together: two prompts per rank, prefilled in one lock-step step
    perf = resolve_pools(scenario)[0].perf
    step_s = perf.lockstep_step_time_s([([(512, 0)] * 2, []), ([(512, 0)] * 2, [])])
    assert sorted(r.first_token_s for r in res.requests)[:4] == [step_s] * 4



def test_speculative_decoding_over_the_ranks() -> None:
    # MTP over attention-DP ranks (TensorRT-LLM's DeepSeek runs): each rank's decodes take their lookahead
    # slots from their own rank's cache and verify 1 + k tokens; the ranks step in lock-step as before.
    def run(k: int):
        data = _scenario(engine="trtllm", users=4, requests=8)
        data["engine"].update(num_speculative_tokens=k, spec_acceptance_rate=0.8)
        reqs = simulate(validate_scenario(data, "spec")).requests
        assert all(r.num_output_tokens == r.output_len == 32 for r in reqs)  # every token once
        return sum((r.finish_s - r.first_token_s) / 31 for r in reqs) / len(reqs)

    # up to 3 tokens a step (1 + 0.8 + 0.64 expected) in steps that verify 3 tokens a request
    assert run(2) < 0.7 * run(0)
