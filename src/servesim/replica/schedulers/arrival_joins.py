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

from servesim.workload.request import Request

# Tokens a fresh waiting request's first chunk takes from the budget left (the policy's rule).
FirstChunk = Callable[[Request, int], int]


def is_fresh(req: Request) -> bool:
    """A request never computed anywhere: no prefix keys (so no hit), adapter, preemption,
    token emitted elsewhere before a crash or KV store load."""
    return not (req.kv_block_keys or req.num_computed_tokens or req.num_output_tokens or req.num_preemptions
                or req.lora is not None or "kv_store_tokens" in req.extra)


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
        if not is_fresh(req):
            return None
        n = first_chunk(req, budget)
        if n != req.num_tokens:
            return None  # a chunk of its prompt (budget, long_prefill_token_threshold), or nothing
        budget -= n
        joins.append((req, n))
    return joins


def admit_whole(sched, joins: list[tuple[Request, int]], out) -> None:
    """Admit `joins` in order with vLLM's `admit` (`VLLMSteps.admit`, no room made), from the
    whole token budget (`whole_prompts` checked the decodes' share)."""
    budget = sched.config.max_num_batched_tokens
    for req, _ in joins:
        budget = sched.admit(req, budget, out)
        if budget is None:
            raise AssertionError(f"request {req.id} could not join the stretch")
