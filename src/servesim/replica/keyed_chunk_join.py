"""A conversation's next turn joining a stretch with its prompt in two chunks (`keyed_join`'s rest).

At 8 replicas a next turn usually reaches a replica that does not hold its context (least-requests
routing is not session-affine) and computes it all again: a context of up to 16k tokens takes two
chunks of vLLM's 8,192-token budget. `keyed_join` refused those (967 of 1,072 refused turns on vllm
sessions, 4,000 requests), so each ended the stretch: an apply, a stepped step with the first
chunk, a `schedule` and a new stretch. Stepping runs such a turn as:

- step s (the boundary where it arrived): the decodes and its first chunk c (the budget they
  leave), its hits and the chunk's blocks allocated and the chunk's full blocks registered by
  the admission (`allocate_slots`), as a whole prompt's in `keyed_join`;
- step s + 1: the decodes and the rest of its prompt (the running pass: decodes first, in
  admission order, then it), the rest's blocks allocated and its full blocks registered there;
  its first token; from s + 2 on it decodes with the others.

Here it joins as Sarathi's long prompts do (`chunk_join.join_after_chunks`: the chunk step
priced with `PerfModel.chunk_time_fn` and kept in `Stretch.prompt_runs`, the request joining at
s + 1 as a whole prompt). What is vLLM's own: the rest's blocks are not allocated at the join but
at step s + 1, so the stretch keeps them as `Stretch.rests` (the views count them from s + 1,
`Stretch.blocks_added`; the apply grants them with the decodes' growth, `apply_rests`), and the
rest's keys register through the stretch's registration plan: the turn is one of its keyed
requests from s + 1, whose plan item starts at the first chunk's registered blocks (the plan's
disjointness checks cover the rest's runs, which `keyed_join` found unindexed and unplanned).
A stretch cut inside step s (an arrival in flight there) leaves the turn as stepping does after
s: the first chunk computed (`apply_prompt_runs`), no more blocks, nothing more registered (the
turn leaves the keyed requests before the registration; the plan, made with it, is not used).

It joins only when step s + 1 is certain: the rest fits whole in the budget the decodes still
running at s + 1 leave (one of them at least) and under `long_prefill_token_threshold` and
`max_model_len`; the decodes' blocks up to s + 1 and the whole prompt's fit in those free when
the stretch was planned; no request joins at s + 1 (the budget is the rest's: `keyed_join`).
Exact against stepping: tests/cluster/test_keyed_chunk_join.py.
"""

from __future__ import annotations

from bisect import bisect_right

from servesim.replica.chunk_join import join_after_chunks
from servesim.replica.schedulers.hygen import HyGenScheduler


def rest_fits(engine, st, req, s: int, c: int, n: int, num_running: int):
    """The perf model's chunk form if the turn `req`, admitted at step s with a first chunk of
    `c` of its `n` uncached prompt tokens beside `num_running` decodes, computes the rest whole
    at step s + 1 (above); None otherwise."""
    sched = engine.scheduler
    if type(sched) is HyGenScheduler or num_running < 1 or st._forms is None:
        return None  # (hygen's running pass is its own; a batch with no decode: stepping's)
    rem = st._sorted_rem
    running_next = len(rem) - bisect_right(rem, s + 1)  # (the decodes still running at s + 1)
    rest = n - c
    _, budget, threshold, _ = sched.limits
    if running_next < 1 or rest > budget - running_next or 0 < threshold < rest:
        return None
    if req.num_tokens > sched.config.max_model_len - 1:
        return None
    chunk_fn = getattr(engine.perf, "chunk_time_fn", None)
    if chunk_fn is None or chunk_fn(num_running, c) is None:
        return None
    return chunk_fn


def join_in_two(engine, st, req, chunk_fn, c: int, cached: int, blocks: int, shared: int = 0) -> int:
    """Price the turn's chunk step s = k and its rest's step s + 1 and join it there (its
    admission with the first chunk done: `keyed_join`); `blocks`: its whole prompt's, `shared`
    of them hits on blocks running requests held (in use before the join: `held_hits.py`).
    Returns its context at step s + 2 less s + 2, its frame's ctx1 (`Stretch.join`)."""
    s, bs, kv = st.k, engine.kv.block_size, engine.kv
    if st._f is None or st._priced != s:
        st.truncate(s)  # (priced ahead by numpy chunks: the scalar state of step s)
        st._sync()
    num_tokens = req.num_tokens
    ctx1 = num_tokens - (s + 1)
    held = kv.num_blocks_of(req.id)  # (its hits and the first chunk's)
    join_after_chunks(engine, st, chunk_fn, req, [c], cached, num_tokens - cached, blocks * bs - ctx1 + 1, held,
                      blocks - shared)
    if shared:  # (logged as in use from step s less those: they already were)
        st.join_shared = [*(st.join_shared or ()), (s, shared)]
    st.rests.append((s + 1, len(st.reqs) - 1, blocks - held))
    return ctx1


def apply_rests(st, steps_of: list[int], new_blocks: list, frees: list[tuple[int, int]]) -> None:
    """At the stretch's end (k steps): each rest whose step ran gets its blocks with the decodes'
    growth (`new_blocks`), logged from its step, and freed with its request when that finished
    before the last step (`freed_blocks` counted what it held without them, as the views did);
    a turn whose rest did not run leaves the keyed requests (it registers nothing more)."""
    k, reqs = st.k, st.reqs
    for s, i, n in st.rests:
        req = reqs[i]
        if s < k:
            if n:
                new_blocks.append((req, n))
                frees.append((s, -n))
                if st.remaining[i] <= k and (m := steps_of[i]) < k:
                    frees.append((m, n))
        else:
            j = next((j for j, (r, _) in enumerate(st.keyed) if r is req), None)
            if j is not None:
                del st.keyed[j]
                del st.keyed_last[j]
