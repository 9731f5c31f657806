"""Sarathi's shared step as the first step of a chunk stretch.

Under overload a prompt is always waiting, so the step that computes one prompt's last chunk
gives what the budget leaves to the next prompt's first chunk (azure-conv-10x, 1 replica: 3,328
of sarathi's 7,839 `schedule` calls). From the next step the first prompt decodes with the others
and the second takes the whole budget they leave until its last chunk: a chunk stretch
(`ChunkStretch`) whose step 0 is the shared step. Step 0 is priced as stepping prices it (both
chunks, the decodes); steps 1, 2, ... are the stretch's usual steps over the decodes with the
first prompt among them at its context after step 0 (`prompt_len`, so `prompt_len - 1` "before
step 0"), the second prompt's chunk of the budget they leave (`extra0`: its step-0 chunk less
that). Its first token is logged at step 0 and its tokens as a decode's from there (`shared`).
Nothing is admitted meanwhile (the budget is spent), so arrivals wait, as in any chunk stretch.
Exact as stepping one by one: tests/replica/test_shared_chunk.py.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

from servesim.replica.chunk_rest import chunks_then_decodes
from servesim.replica.chunk_stretch import chunk_stretch, plan_chunk_stretch
from servesim.replica.chunk_through import chunks_through
from servesim.replica.schedulers.queues import ARRIVAL_ID  # (sarathi's decode order)
from servesim.workload.request import Request


def shared_fast_forward(engine, now_s: float, out: Any, decodes: list[Request], decode_ctxs: list[int],
                        prefills: list[tuple[Request, int]], ff: Any = None) -> bool:
    """Run the shared step just scheduled (`decodes`, one prompt's last chunk, the next one's
    first) and the chunk steps after it as a `ChunkStretch`, if the scheduler says they follow
    (`Scheduler.shares_chunk`) and at least two steps are safe (or with the second prompt's
    rest and the decode steps after it as one stretch, where the policy's answer `ff` allows:
    `replica/chunk_rest.py`); False, changing nothing, otherwise."""
    if len(prefills) != 2 or engine.deliver is not None or engine.scheduler.chunks_allocate:
        return False
    chunk = engine.scheduler.shares_chunk(out)
    if not chunk:
        return False
    (first, r), (prompt, c0) = prefills
    if ff is not None and chunks_then_decodes(engine, now_s, out, decodes, decode_ctxs, prompt, c0, ff, (first, r)):
        return True
    # steps 1, 2, ... give the prompt `chunk` tokens and leave it unfinished; the decodes (the
    # first prompt one of them) run until the first of them emits its last token
    kmax = -(-(prompt.num_tokens - prompt.num_computed_tokens - c0) // chunk)
    rem = [req.output_len - req.num_output_tokens for req in decodes]
    kd = min(min(rem, default=kmax), first.output_len)
    through = kd < kmax and chunks_through(engine, decodes + [first])  # (on through finishes: `chunk_through.py`)
    if not through:
        kmax = min(kmax, kd)
    if kmax < 2:
        return False
    end0 = now_s + engine.perf.step_time_s([(r, first.num_computed_tokens), (c0, prompt.num_computed_tokens)],
                                           decode_ctxs)
    i = bisect_right(decodes, ARRIVAL_ID(first), key=ARRIVAL_ID)  # (its place in the decode order)
    batch = decodes[:i] + [first] + decodes[i:]
    ctxs = decode_ctxs[:i] + [first.num_tokens - 1] + decode_ctxs[i:]
    rem[i:i] = (first.output_len - first.num_output_tokens,)
    st = chunk_stretch(engine, now_s, end0, out, batch, ctxs, prompt, chunk, kmax, through, c0 - chunk, (first, r), rem)
    return plan_chunk_stretch(engine, st)
