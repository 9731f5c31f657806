"""A conversation's next turn joining a stretch with its prompt in chunks (`keyed_join`'s rest).

At 8 replicas a next turn usually reaches a replica that does not hold its context (least-requests
routing is not session-affine) and computes it all again: a context of up to 16k tokens takes two
chunks of vLLM's 8,192-token budget; Mooncake's prompts (49 % longer than the budget) take up to
fifteen. `keyed_join` refused those, so each ended the stretch: an apply, a stepped step with the
first chunk, a `schedule`, a chunk stretch or more stepped steps, and a new stretch. Stepping runs
such a turn as:

- step s (the boundary where it arrived): the decodes and its first chunk c (the budget they
  leave), its hits and the chunk's blocks allocated and the chunk's full blocks registered by
  the admission (`allocate_slots`), as a whole prompt's in `keyed_join`;
- steps s + 1 ... s + q - 1 (none with two chunks): the decodes, then (the running pass, in
  admission order) a chunk of the budget they leave (`long_prefill_token_threshold` at most),
  its blocks allocated and its full blocks registered at its step;
- step s + q: the decodes and the rest of its prompt, its blocks and registrations; its first
  token; from s + q + 1 on it decodes with the others.

Here it joins as Sarathi's long prompts do (`chunk_join.join_after_chunks`: the chunk steps
priced with `PerfModel.chunk_time_fn` and kept in `Stretch.prompt_runs`, the request joining at
s + q as a whole prompt). What is vLLM's own: each later chunk's blocks are not allocated at the
join but at its step, so the stretch keeps them as `Stretch.rests`, one entry a step (the views
count them from there, `Stretch.blocks_added`; the apply grants them with the decodes' growth,
`apply_rests`), and the chunks' keys register through the stretch's registration plan: the turn
is one of its keyed requests from s + q, whose plan item starts at the first chunk's registered
blocks (its frame's context at a chunk step is at least the tokens computed by then, so the
plan's checks cover every chunk's runs, which `keyed_join` found unindexed and unplanned). A
stretch cut inside those steps (an arrival in flight there, or `Engine._limit`) leaves the turn
as stepping does: the chunks that ran computed (`apply_prompt_runs`), their blocks granted, their
full blocks registered (`cache_full_blocks`) and the turn taken out of the keyed requests before
the plan's registration (its item, the whole prompt's, is not used).

It joins only when those steps are certain: a decode running in each of them, the rest whole in
the budget of step s + q, the prompt within `max_model_len`; the decodes' blocks up to s + q and
the whole prompt's fit in those free when the stretch was planned; no request joins up to s + q
(the budget is the turn's: `keyed_join`); no policy timer falls due in them, unless the policy's
timers only free blocks there (continuum's pins, `timers_only_free`: the steps are cut at the
first pin the stretch must stop at, and a turn that pins when it finishes keeps its rests'
blocks). Exact against stepping:
tests/cluster/test_keyed_chunk_join.py (two chunks), test_keyed_chunks_join.py (Mooncake, up to
fifteen).
"""

from __future__ import annotations

from bisect import bisect_right

from servesim.replica.chunk_join import join_after_chunks
from servesim.replica.held_hits import log_shared
from servesim.replica.schedulers.andes import AndesScheduler
from servesim.replica.schedulers.autellix import AutellixScheduler
from servesim.replica.schedulers.edf import EDFScheduler
from servesim.replica.schedulers.fastswitch import FastSwitchScheduler
from servesim.replica.schedulers.hygen import HyGenScheduler
from servesim.replica.schedulers.priority import PriorityScheduler
from servesim.replica.schedulers.vllm import VLLMScheduler


def chains_after_rest(sched) -> bool:
    """Do a joined turn's chunk steps spend the whole token budget, so that a turn arriving
    inside them waits, admitted nothing, to its rest's step (`Stretch.chain_at`), where `keyed_join`
    may admit it beside the rest as stepping's `schedule` does? vLLM's own admission and the
    keyed policies that admit as it does (priority, EDF: their running pass gives the joined
    turn, keyed after every running request, the budget the decodes leave, and their admission
    stops at a spent budget before it would preempt; FastSwitch with its one tenant held, whose
    walk is then in arrival order; HyGen online only, whose offline fill takes nothing from a
    spent budget: `repeats_chunk`; Andes, whose knapsack runs only where the KV use reaches its
    threshold, which the joined turn's check kept it under through its rest's step with its
    margin (`join_blocks`), so that its `decide` brings in what is pending, nothing from a
    spent budget; the waiting turn is valued only by a `schedule`'s refresh, which the join
    replaces, as any join's; Autellix, whose turns join with one chunk step before their rest
    (`max_join_chunks` 1), where a spent budget stops its admission before any preemption: a turn
    arriving inside it waits one step-end pass, which adds the time from its arrival to that
    step's end to its session's waiting time, the one sum the join adds, `joins_last` checking
    the promotion on it), without a `long_prefill_token_threshold` below the budget (a chunk
    would leave room)."""
    _, budget, threshold, _ = sched.limits
    return type(sched) in _CHAINS and not 0 < threshold < budget


_CHAINS = (VLLMScheduler, PriorityScheduler, EDFScheduler, FastSwitchScheduler, HyGenScheduler, AndesScheduler,
           AutellixScheduler)


def chunks_fit(engine, st, req, s: int, c: int, n: int, num_running: int) -> tuple | None:
    """(the perf model's chunk form, the chunks of steps s, s + 1, ... before the last) if the
    turn `req`, admitted at step s with a first chunk of `c` of its `n` uncached prompt tokens
    beside `num_running` decodes, runs its prompt as vLLM's running pass would (above): each
    later step gives it the budget the decodes still running there leave (capped by
    `long_prefill_token_threshold`), a decode running in each; None otherwise."""
    sched = engine.scheduler
    _, budget, threshold, chunked = sched.limits
    if num_running < 1 or st._forms is None or c <= 0:
        return None  # (a batch with no decode: stepping's)
    if type(sched) is HyGenScheduler and (0 < threshold < budget or not chunked):
        return None  # (hygen's online passes give a prompt min(its tokens, budget), whatever these say)
    if req.num_tokens > sched.config.max_model_len - 1:
        return None
    rem = st._sorted_rem
    chunks, done, j = [c], c, s + 1
    p = bisect_right(rem, j)
    while True:
        running = len(rem) - p  # (the decodes still running at step j)
        if running < 1:
            return None
        cap = budget - running
        if 0 < threshold < cap:
            cap = threshold
        if n - done <= cap:
            break  # (step j computes the rest and emits the first token)
        chunks.append(cap)
        done += cap
        j += 1
        p = bisect_right(rem, j, p)
    chunk_fn = getattr(engine.perf, "chunk_time_fn", None)
    if chunk_fn is None or chunk_fn(num_running, c) is None:
        return None
    return chunk_fn, chunks


def join_in_chunks(engine, st, req, chunk_fn, chunks: list[int], cached: int, blocks: int, shared: int = 0,
                   priced: bool = False) -> int:
    """Price the turn's chunk steps s = k, ..., s + q - 1 (`chunks`, the first admitted already:
    `keyed_join`) and its rest's step s + q, and join it there; `blocks`: its whole prompt's,
    `shared` of them hits on blocks running requests held (in use before the join:
    `held_hits.py`). Each later chunk's blocks are a rest of its step (allocated there, as the
    running pass does). `priced`: step s is in the stretch already, the first chunk beside a
    joined turn's rest (`keyed_join`'s chain; the scalar state then step s + 1's). Returns its
    context at step s + q + 1 less s + q + 1, its frame's ctx1 (`Stretch.join`)."""
    s, bs, kv = st.k - priced, engine.kv.block_size, engine.kv
    if not priced and (st._f is None or st._priced != s):
        st.truncate(s)  # (priced ahead by numpy chunks: the scalar state of step s)
        st._sync()
    num_tokens, q = req.num_tokens, len(chunks)
    ctx1 = num_tokens - (s + q)
    held = kv.num_blocks_of(req.id)  # (its hits and the first chunk's)
    at = join_after_chunks(engine, st, chunk_fn, req, chunks, cached, num_tokens - cached, blocks * bs - ctx1 + 1,
                           held, blocks - shared, priced)
    if chains_after_rest(engine.scheduler):
        st.chain_at = at  # (a turn arriving inside its chunks waits to its rest's step: `keyed_join`'s chain)
    if shared:  # (logged as in use from step s less those: they already were)
        log_shared(st, s, shared)
    i, rests, done, had = len(st.reqs) - 1, st.rests, cached + chunks[0], held
    for j, chunk in enumerate(chunks[1:], s + 1):  # (the middle chunks' blocks, at their steps)
        done += chunk
        now = -(-done // bs)
        rests.append((j, i, now - had))
        had = now
    rests.append((s + q, i, blocks - had))
    return ctx1


def apply_rests(st, steps_of: list[int], new_blocks: list, frees: list[tuple[int, int]]) -> list:
    """At the stretch's end (k steps): each rest whose step ran gets its blocks with the decodes'
    growth (`new_blocks`), logged from its step, and freed with its request when that finished
    before the last step (`freed_blocks` counted what it held without them, as the views did),
    unless its finish keeps them (continuum's pin).
    A turn whose last step did not run leaves the keyed requests (its plan item is its whole
    prompt's): returns those turns, whose chunks computed so far register their full blocks
    once the blocks are granted (`KVCacheManager.cache_full_blocks`, as the running pass did)."""
    k, reqs = st.k, st.reqs
    keeps = st.kept[0] if st.kept is not None else None  # (a finish that keeps its blocks, a pin, frees none)
    cut = []
    for s, i, n in st.rests:
        req = reqs[i]
        if s < k:
            if n:
                new_blocks.append((req, n))
                frees.append((s, -n))
                if st.remaining[i] <= k and (m := steps_of[i]) < k and not (keeps and keeps(req)):
                    frees.append((m, n))
        elif not cut or cut[-1] is not req:  # (its first step past k: a turn's rests are listed in step order)
            j = next((j for j, (r, _) in enumerate(st.keyed) if r is req), None)
            if j is not None:
                del st.keyed[j]
                del st.keyed_last[j]
            cut.append(req)
    return cut
