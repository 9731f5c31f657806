"""Which waiting requests may join a stretch in flight (`Scheduler.arrivals_join`): the check
shared by the policies whose next `schedule`, with every running request decoding, admits
fresh prompts whole as vLLM's admission does.

A join is exact only if stepping would admit every waiting request at that boundary, whole,
with no prefix-cache hit, in the order the policy admits them (`replica/stretch_join.py`
checks the KV blocks). Each policy supplies that order and its first chunk (how many prompt
tokens a fresh request gets from the budget left); this module checks the rest.
"""

from __future__ import annotations

from typing import Callable, Iterable

from servesim.replica.schedulers.vllm_steps import VLLMSteps
from servesim.workload.request import Request

# Tokens a fresh waiting request's first chunk takes from the budget left (the policy's rule).
FirstChunk = Callable[[Request, int], int]


def is_fresh(req: Request) -> bool:
    """A request never computed anywhere: no prefix keys (so no hit), adapter, preemption, token
    emitted elsewhere before a crash or KV store load."""
    return not (req.kv_block_keys or req.num_computed_tokens or req.num_output_tokens or req.num_preemptions
                or req.lora is not None or "kv_store_tokens" in req.extra)


def never_computed(req: Request) -> bool:
    """`is_fresh` but for prefix keys: nothing of the request computed anywhere (a next turn
    whose context another request left cached is one)."""
    return not (req.num_computed_tokens or req.num_output_tokens or req.num_preemptions or req.lora is not None
                or "kv_store_tokens" in req.extra)


def whole_prompts(reqs: Iterable[Request], num_held: int, num_running: int, max_num_seqs: int,
                  max_num_batched_tokens: int, first_chunk: FirstChunk) -> list[tuple[Request, int]] | None:
    """The (request, prompt tokens) admitted if every request of `reqs`, in that order, is
    fresh and gets its whole prompt from the budget the `num_running` decodes leave; else None.
    `num_held`: the requests the scheduler holds as running (a stretch's finished ones leave
    that list only when it ends, so the sequence cap is checked on it: conservative)."""
    reqs = list(reqs)
    if num_held + len(reqs) > max_num_seqs:
        return None
    budget = max_num_batched_tokens - num_running
    joins = []
    for req in reqs:
        # (`is_fresh`, written out: this runs for every arrival at a busy replica)
        if (req.kv_block_keys or req.num_computed_tokens or req.num_output_tokens or req.num_preemptions
                or req.lora is not None or "kv_store_tokens" in req.extra):
            return None
        n = first_chunk(req, budget)
        if n != req.prompt_len:  # (its `num_tokens`: nothing emitted yet)
            return None  # a chunk of its prompt (budget, long_prefill_token_threshold), or nothing
        budget -= n
        joins.append((req, n))
    return joins


def admit_whole(sched, joins: list[tuple[Request, int]], out) -> None:
    """Admit `joins` in order with vLLM's `admit` (`VLLMSteps.admit`, no room made), from the
    whole token budget (`whole_prompts` checked the decodes' share).

    With vLLM's own `admit` and `first_chunk`, a fresh request that the prefix cache does not
    hit (the lookup is still made) is admitted as `admit` would with no hit and no KV store
    tokens: its whole prompt as its chunk (the budget is larger than the one `whole_prompts`
    checked), blocks that `join_arrivals` checked are free, the same calls on the KV cache and
    the queues without the rest of the general path (this runs for every arrival at a busy
    replica)."""
    lean = type(sched).admit is VLLMSteps.admit and type(sched).first_chunk is VLLMSteps.first_chunk
    kv, waiting = sched.kv, sched.waiting
    budget = sched.limits[1]  # (max_num_batched_tokens)
    for req, n in joins:
        if lean and not kv.get_computed_blocks(req):
            if not kv.allocate_slots(req, n):
                raise AssertionError(f"request {req.id} could not join the stretch")
            waiting.remove(req)
            sched.start(req, 0, n, out)
            budget -= n
            continue
        budget = sched.admit(req, budget, out)
        if budget is None:
            raise AssertionError(f"request {req.id} could not join the stretch")
