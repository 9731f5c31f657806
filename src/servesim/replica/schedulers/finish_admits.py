"""Which waiting requests a finish admits inside an admission stretch (`Scheduler.finish_admits`,
`replica/admission_stretch.py`): the loop shared by the policies whose admission takes the
waiting requests in a known order, each whole, until one does not fit (vLLM's head-of-line
blocking).

The answer must be determined until the next finish: after the admitted prompts either the
queue is empty or its head waits for KV blocks (its need is fixed: fresh, no prefix keys, and
decode-only steps only take blocks). A prompt the budget would chunk, a request that is not
fresh (a preempted one may hit its own blocks, whose survival depends on the free queue's
pops), a budget spent, or the sequence cap (read on `running`, which still lists the finished
requests) leave it undetermined (None): the stretch ends there and stepping decides.

With `chunk` (a policy whose next running pass gives a prompt in progress the rest of it
before anything is admitted: vLLM's steps), a fresh prompt that the budget the prompts before
it left chunks is admitted with that chunk, its blocks free: the admission stops there (the
budget is spent), and the stretch takes its next boundary at the very next step, where the
prompt's rest runs and admission goes on (`admission_stretch.py`). A head whose first chunk's
blocks are not free waits until the next finish, as a whole prompt's would.
"""

from __future__ import annotations

from typing import Callable, Iterable

from servesim.replica.schedulers.arrival_joins import FirstChunk, is_fresh
from servesim.workload.request import Request


def admits_of(sched, num_running: int, free_blocks: int, first_chunk: FirstChunk,
              chunk: bool = False) -> tuple[list[tuple[Request, int]], Request | None] | None:
    """`admits_until_blocked` over `sched`'s waiting requests, in its admission order, with its
    own limits: what its next `schedule` admits at a finish."""
    max_num_seqs, max_num_batched_tokens, _, _ = sched.limits
    return admits_until_blocked(sched.waiting, len(sched.running), num_running,
                                max_num_seqs, max_num_batched_tokens, free_blocks, sched.kv.block_size,
                                first_chunk, chunk=chunk)


def admits_until_blocked(reqs: Iterable[Request], num_held: int, num_running: int, max_num_seqs: int,
                         max_num_batched_tokens: int, free_blocks: int, block_size: int,
                         first_chunk: FirstChunk, over_limit: Callable[[Request], bool] | None = None,
                         chunk: bool = False) -> tuple[list[tuple[Request, int]], Request | None] | None:
    """(the (request, prompt tokens) admitted in `reqs`' order, the head left waiting for KV
    blocks or None if none is left), or None if not determined. `num_running`: the decodes of
    the next step; `free_blocks`: free once their blocks are allocated; `num_held`: the
    requests `running` lists. `over_limit`: a policy's own admission limit, asked of each
    request in turn (True: it waits there, as one whose blocks are not free; `batchllm`'s
    projected use, which only a finish lowers). `chunk`: the last request admitted may get a
    chunk of its prompt, the whole budget left (see above)."""
    budget = max_num_batched_tokens - num_running
    room = max_num_seqs - num_held
    joins: list[tuple[Request, int]] = []
    for req in reqs:
        if budget <= 0 or len(joins) >= room or not is_fresh(req):
            return None
        n = first_chunk(req, budget)
        if n != req.num_tokens and not (chunk and n == budget):
            return None  # a chunk of its prompt, or a prompt over the budget
        need = -(-n // block_size)
        if need > free_blocks or (over_limit is not None and over_limit(req)):
            # head-of-line blocking until the next finish frees blocks (a first chunk's too: up
            # to that finish the budget left to the head only grows, by the tokens the prompts
            # before it took beyond their one decode token, and the free blocks only fall)
            return joins, req
        if n != req.num_tokens:
            joins.append((req, n))  # the budget is spent: nothing more this step
            return joins, None
        joins.append((req, n))
        budget -= n
        free_blocks -= need
    return joins, None
