"""TensorRT-LLM's attention-DP context balance (`attention_dp_config.enable_balance`).

With attention DP every rank steps in lock-step, so a step in which one rank prefills a context
while the others only decode costs every rank the prefill's time. TensorRT-LLM's PyTorch executor
can hold contexts back until every rank has one (`PyExecutor._balance_adp_requests`, called from
`_schedule` when `attention_dp_config.enable_balance` is true; off by default). Each iteration,
after every rank has scheduled, the ranks all-gather how many context and generation requests
they scheduled, then:

- every rank has a context and a free batch slot: the waiting count restarts; if every rank also
  has generation requests, the contexts wait up to `batching_wait_iters` iterations for more
  (a second count), else they run;
- otherwise the contexts are held and the waiting count grows (also when no rank has a context:
  the count runs on every iteration); when it reaches `timeout_iters`, or when some rank has no
  generation request, it restarts and the contexts run.

A rank with no request at all runs TensorRT-LLM's dummy generation request, so it counts as
generating. Modelling choice: servesim asks before the ranks schedule, so a rank "has a context"
when it has a waiting request or a started, unfinished context (with chunked context off, the
InferenceMAX deployments, every waiting request that fits is scheduled whole, which is what
TensorRT-LLM counts), and "has a free slot" when its running requests are below its
`max_batch_size`.

Who turns it on: the InferenceMAX scripts that measured the TensorRT-LLM attention-DP rows
(`benchmarks/dsr1_*_trt*.sh` since Sep 2025: `enable_balance: true`, `timeout_iters: 60`,
`batching_wait_iters: 0`; `gptoss_fp4_b200_trt.sh`: `enable_balance: true`, the defaults 50 / 10);
validation/inferencemax.py maps them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class BalanceState:
    """The executor's two counters (`adp_ctx_waiting_iters_count`, `adp_ctx_batching_wait_iters_count`)."""

    waiting_iters: int = 0
    batching_iters: int = 0


@dataclass(frozen=True)
class RankView:
    """What one rank reports to the balance at an iteration."""

    has_context: bool
    num_generation: int  # generation requests (an idle rank's dummy counts as 1)
    max_batch_size: int


def balance_step(state: BalanceState, ranks: Sequence[RankView], timeout_iters: int,
                 batching_wait_iters: int) -> tuple[bool, BalanceState]:
    """(hold the contexts this iteration, the next state), as `_balance_adp_requests` decides."""
    all_free = all(r.num_generation < r.max_batch_size for r in ranks)
    all_ctx = all(r.has_context for r in ranks)
    all_gen = all(r.num_generation > 0 for r in ranks)
    if all_free and all_ctx:
        if not all_gen:
            return False, BalanceState(0, state.batching_iters)
        if state.batching_iters < batching_wait_iters:
            return True, BalanceState(0, state.batching_iters + 1)
        return False, BalanceState(0, 0)
    waited = state.waiting_iters + 1
    if waited >= timeout_iters or not all_gen:
        return False, BalanceState(0, state.batching_iters)
    return True, BalanceState(waited, state.batching_iters)
