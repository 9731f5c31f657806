"""TensorRT-LLM's attention-DP context balance (`attention_dp_config.enable_balance`): the pure
decision, and a replica whose ranks hold a lone context until the timeout."""

from __future__ import annotations

from servesim.cluster.build import resolve_pools
from servesim.replica.attention_dp_balance import BalanceState, RankView, balance_step
from servesim.scenario import validate_scenario
from tests.factories import make_request


def _view(ctx: bool, gen: int, cap: int = 8) -> RankView:
    return RankView(has_context=ctx, num_generation=gen, max_batch_size=cap)


def test_contexts_wait_for_every_rank_or_the_timeout() -> None:
    lone = [_view(True, 3), _view(False, 3)]
    state, holds = BalanceState(), []
    for _ in range(4):
        hold, state = balance_step(state, lone, timeout_iters=3, batching_wait_iters=0)
        holds.append(hold)
    assert holds == [True, True, False, True]  # released at the 3rd iteration, then the count restarts
    # every rank with a context (and a free slot): released at once, the count restarts
    hold, state = balance_step(BalanceState(2, 0), [_view(True, 3), _view(True, 1)], 3, 0)
    assert (hold, state) == (False, BalanceState(0, 0))
    # a rank without generation requests: nothing to wait behind, released
    assert balance_step(BalanceState(), [_view(True, 0), _view(False, 3)], 60, 0)[0] is False
    # a full rank counts as no free slot: held
    assert balance_step(BalanceState(), [_view(True, 3), _view(True, 8)], 60, 0) == (True, BalanceState(1, 0))


def test_batching_wait_holds_full_rounds_while_every_rank_generates() -> None:
    both = [_view(True, 2), _view(True, 2)]
    state, holds = BalanceState(), []
    for _ in range(3):
        hold, state = balance_step(state, both, timeout_iters=50, batching_wait_iters=2)
        holds.append(hold)
    assert holds == [True, True, False] and state == BalanceState(0, 0)


def _trtllm_dp(balance: bool) -> object:
    data = {
        "model": "deepseek-v3", "gpu": "b200", "tp": 4, "dtype": "fp8",
        "perf": {"engine": "trtllm", "data_parallel_size": 2, "moe_tp_size": 1, "moe_ep_size": 8},
        "engine": {"max_num_seqs": 8, "max_num_batched_tokens": 4096},
        "scheduler": {"name": "trtllm", "attention_dp_enable_balance": balance, "attention_dp_timeout_iters": 3,
                      "attention_dp_batching_wait_iters": 0},
        "workload": {"arrival": {"process": "closed", "users": 2, "think_time_s": 0.0},
                     "lengths": {"prompt_tokens": 512, "output_tokens": 32}, "num_requests": 4},
    }
    sched, _ = resolve_pools(validate_scenario(data, "test"))[0].make_parts()
    return sched


def _run_steps(sched, n: int) -> list[list[int]]:
    """Schedule and end `n` steps; the ids of the contexts each step ran."""
    ran = []
    for step in range(n):
        out = sched.schedule(float(step))
        ran.append(sorted(r.id for r, k in out.scheduled if k > 1))
        for r, k in out.scheduled:
            r.num_computed_tokens += k
            if r.num_computed_tokens >= r.prompt_len:
                r.num_output_tokens += 1
        sched.end_step(out, float(step), step + 1)
    return ran


def test_a_lone_context_waits_for_the_timeout_while_both_ranks_generate() -> None:
    for balance, expected in ((True, [[0, 1], [], [], [2]]), (False, [[0, 1], [2], [], []])):
        sched = _trtllm_dp(balance)
        first = [make_request(i, 512, 32) for i in range(2)]
        for r in first:
            sched.add_request(r, 0.0)
        ran = _run_steps(sched, 1)  # both ranks prefill together: released at once
        sched.add_request(make_request(2, 512, 32), 1.0)  # one rank gets a context, the other none
        ran += _run_steps(sched, 3)
        assert ran == expected, balance
