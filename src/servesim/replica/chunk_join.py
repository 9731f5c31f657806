"""A long prompt joining a stretch in flight with its chunks (Sarathi-Serve's stall-free batching).

Under Sarathi's token budget most arrivals have prompts longer than the budget the running
decodes leave (azure-conv: 2,459 of the 2,466 arrivals at 8 replicas that could not join whole).
Stepping's next `schedule` admits such a prompt with the rest of the budget as its first chunk
(its whole prompt's blocks taken at admission); every later step runs the same decodes and gives
it the same chunk until the step that computes its rest, which emits its first token; from the
next step it decodes with the others. Ending the stretch there cost three cycles (apply,
schedule, plan: the decode stretch, the chunk stretch, the last chunk's step). Here the prompt
joins at the boundary s0 instead (`Scheduler.arrival_chunk`): steps s0 .. s0 + q - 1 run the
decodes and a chunk each (the budget they leave), step s0 + q the decodes and the rest, and the request joins the
stretch there as a whole prompt joins (`Stretch.join`), the earlier chunks kept in
`Stretch.prompt_runs` for the views (`prompt_tokens_before`) and the step log.

It joins only when those steps are certain: one waiting request, fresh; a decode still running
in each (a decode that leaves before one adds a token to its chunk, as stepping's budget does:
the chunks are listed, not one size); the decodes' blocks up to s0 + q, the
prompt's and the watermark fit in those free when the stretch was planned (stepping has at
least those: finishes only add to them); the perf model has the scalar chunk form (each step
priced with `PerfModel.chunk_time_fn`, the same floats as stepping's `step_time_s`). No request
joins at a boundary up to s0 + q (the budget is the prompt's there): a stretch cut inside the
chunk steps is applied with the chunks that ran (`apply_prompt_runs`), and stepping goes on
from there exactly.

An arrival inside the chunk steps would be admitted by stepping only at s0 + q, beside the
prompt's rest, so it is kept waiting (as a chunk stretch keeps it) and the stretch ends at
s0 + q (`keeps_in_chunks`, `Engine.add_request`); there `chain_join` admits it as that step's
`schedule` would: a first chunk of the budget the rest leaves (step s0 + q priced again with
both prompts, `PerfModel.prompts_step_s`), then its own chunks as above, joining at its own
rest, where the next newcomer may chain on; or whole, when that budget covers its prompt.
Before this an arrival there cut the stretch at the step in flight and cost three cycles of
apply, schedule and plan (the rest of the chunks, the shared step, the rest of the newcomer's).
Checked against stepping by tests/replica/test_chunk_join.py and test_chain_join.py.
"""

from __future__ import annotations

from bisect import bisect_right


def chunk_join(engine, st, now_s: float, num_running: int) -> bool:
    """At `now_s`, the boundary s0 = k of the stretch `st` (a plain `Stretch` through finishes,
    cut by an arrival that cannot join whole): admit the waiting request with its first chunk
    if `arrival_chunk` says so and its chunk steps are certain (above), price them and the join
    of its rest, and price on. True if it joined; False changes nothing."""
    sched = engine.scheduler
    if num_running < 1 or st._forms is None:
        return False
    got = sched.arrival_chunk(num_running, 0)
    if got is None:
        return False
    req, c = got
    # The chunk steps: step j gives the prompt the budget the decodes still running leave (the
    # first chunk c is what the `num_running` leave: a decode that leaves adds one token to
    # the next), up to the step whose budget covers its rest
    budget, n, rem = c + num_running, req.num_tokens, st._sorted_rem
    s0 = st.k
    got = _chunks_to_rest(budget, n, rem, s0)
    if got is None:
        return False
    chunks, last = got  # (last: the step that computes the rest and emits the first token)
    chunk_fn = getattr(engine.perf, "chunk_time_fn", None)
    if chunk_fn is None or chunk_fn(num_running, c) is None:
        return False  # (no scalar form of a chunk's step: sliding windows)
    bs = engine.kv.block_size
    blocks, kept = sched.join_blocks([(req, n)])
    free = st.free_blocks - st.join_blocks - blocks - kept
    if st.blocks_bound(last + 1, bs) > free and st.blocks_needed(last + 1, bs) > free:
        return False  # (the admission at s0 and every decode's block up to the last chunk)
    if st._f is None or st._priced != s0:
        st.truncate(s0)  # (priced ahead by numpy chunks: the scalar state of step s0)
        st._sync()
    sched.join([(req, c)], st.out)  # (listed in the output the stretch's end hands `end_step`)
    if req.first_scheduled_s is None:
        req.first_scheduled_s = now_s
    first_new = engine.kv.num_blocks_of(req.id) * bs - (n - last) + 1  # (`first_new_block_steps`, ctx1 n - last)
    st.chain_at = join_after_chunks(engine, st, chunk_fn, req, chunks, 0, n, first_new, blocks, blocks)
    return _joined_priced_on(engine, st, now_s, last)


def _joined_priced_on(engine, st, now_s: float, last: int) -> bool:
    """After a prompt joined with its chunks (its rest at step `last`): the stretch priced on,
    limited (from `last` + 1: the steps up to there are checked) and its end (re)scheduled."""
    engine.num_joined_arrivals += 1
    # (from the scalar state the rest's join left, `join_ahead` steps ahead at a replica among
    # many, as a lean join's: `price_on`, which takes `price`'s numpy chunks without that state)
    st.price_on(engine._stretch_horizon_s(now_s, st.end_s), engine.join_ahead)
    engine._limit(st, last + 1)
    engine._schedule_stretch_end(st)
    return True


def _chunks_to_rest(budget: int, left: int, rem: list[int], j: int) -> tuple[list[int], int] | None:
    """The chunks of steps j, j + 1, ...: each the budget the decodes still running then leave
    (`rem`: their tokens to emit, sorted; a decode that left gives its token back), up to the
    step whose budget covers what is `left` of the prompt: (the chunks, that step), or None when
    every decode leaves before it (an idle batch's chunks, left to stepping)."""
    p = bisect_right(rem, j)
    chunks = []
    while left > budget - (len(rem) - p):
        chunks.append(budget - (len(rem) - p))
        left -= chunks[-1]
        j += 1
        p = bisect_right(rem, j, p)
        if p == len(rem):
            return None
    return chunks, j


def keeps_in_chunks(st, t: float) -> bool:
    """Would an arrival at `t` be first seen by a step at or before the join step L of the
    prompt whose chunks `st` runs (`Stretch.chain_at`)? Steps before L spend the whole budget on
    that prompt, so stepping admits nothing there and the newcomer waits until L, where the
    prompt's rest leaves room for it (`chain_join`): the engine keeps it waiting and ends the
    stretch at L rather than cutting it at the step in flight."""
    return st.steps_before(t) < st.chain_at[0]


def chain_join(engine, st, now_s: float) -> bool:
    """At `now_s`, the boundary L of the stretch `st` where the prompt whose chunks it runs
    computes its rest (`chain_at`; the stretch was ended there by a newcomer kept waiting):
    admit the one waiting request with the budget that rest leaves as its first chunk in step
    L, as stepping's `schedule` would (`arrival_chunk` with the rest as tokens spent), then its
    chunks beside the decodes (the first prompt one of them) up to its own rest, where it
    joins (`join_after_chunks`). Step L is priced again with both prompts
    (`PerfModel.prompts_step_s`, the floats of `step_time_s`). The same conditions as
    `chunk_join` (one fresh request waiting, a sequence slot, its blocks and the decodes' up
    to its last chunk above the watermark in those free when the stretch was planned, a decode
    running in each of its steps). True if it joined; False changes nothing."""
    s, active, ctx_sum, done, rest = st.chain_at
    if st.k != s or st.joins[-1][0] != s or st._forms is None:
        return False
    sched, perf = engine.scheduler, engine.perf
    form = getattr(perf, "prompts_step_s", None)
    if form is None:
        return False
    got = sched.arrival_chunk(active, rest)
    if got is None:  # (two waiting, no slot, or prompts that budget covers whole)
        return _chain_whole(engine, st, now_s, form)
    req, c0 = got
    step_s = form([(rest, done), (c0, 0)], active, ctx_sum)
    if step_s is None:
        return False
    # its chunks from step s + 1: the budget the decodes running then leave (the first prompt
    # decodes among them), up to the step whose budget covers its rest
    budget, n, rem = c0 + active + rest, req.num_tokens, st._sorted_rem
    got = _chunks_to_rest(budget, n - c0, rem, s + 1) if bisect_right(rem, s + 1) < len(rem) else None
    if got is None:
        return False  # (every decode left: an idle batch's chunks, left to stepping)
    chunks, last = [c0, *got[0]], got[1]
    bs = engine.kv.block_size
    blocks, kept = sched.join_blocks([(req, n)])
    free = st.free_blocks - st.join_blocks - blocks - kept
    if st.blocks_bound(last + 1, bs) > free and st.blocks_needed(last + 1, bs) > free:
        return False
    sched.join([(req, c0)], st.out)
    if req.first_scheduled_s is None:
        req.first_scheduled_s = now_s
    if not st.waiting_to:
        st.waiting_to = []
    st.waiting_to.append(s)  # (kept waiting from the step that first saw it: `add_waiting`)
    st._append([st.end_s + step_s])  # step s with both prompts (nothing was priced past it: ended there)
    st._sync()  # (the scalar state of step s + 1, the first prompt decoding)
    first_new = engine.kv.num_blocks_of(req.id) * bs - (n - last) + 1  # (`first_new_block_steps`, ctx1 n - last)
    st.chain_at = join_after_chunks(engine, st, perf.chunk_time_fn, req, chunks, 0, n, first_new, blocks, blocks, 1)
    return _joined_priced_on(engine, st, now_s, last)


def _chain_whole(engine, st, now_s: float, form) -> bool:
    """`chain_join` for waiting prompts that the budget the first prompt's rest leaves covers
    whole (`arrivals_join`, the rest counted as tokens spent, as a decode's one): they join at
    step s beside that rest as whole prompts join (`Stretch.join`), decoding from s + 1."""
    s, active, ctx_sum, done, rest = st.chain_at
    sched, kv = engine.scheduler, engine.kv
    joins = sched.arrivals_join(active + rest)
    if not joins:
        return False
    bs = kv.block_size
    blocks, kept = sched.join_blocks(joins)
    free = st.free_blocks - st.join_blocks - blocks - kept
    if st.blocks_bound(s + 1, bs) > free and st.blocks_needed(s + 1, bs) > free:
        return False
    step_s = form([(rest, done)] + [(n, 0) for _, n in joins], active, ctx_sum)
    if step_s is None:
        return False
    # The scalar state of step s from the lists: the first prompt, joined at s, counts there as a
    # decode of its prompt less one token, so `join` moves it to its whole prompt at s + 1
    st._sync()
    sched.join(joins, st.out)
    for req, _ in joins:
        if req.first_scheduled_s is None:
            req.first_scheduled_s = now_s
    if not st.waiting_to:
        st.waiting_to = []
    st.waiting_to += [s] * len(joins)
    first_new = kv.first_new_block_steps([req for req, _ in joins], [n - s for _, n in joins])
    st.join(joins, first_new, blocks, step_s, engine._decode_forms(len(st.reqs) + len(joins)), bs)
    st.chain_at = None
    engine.num_joined_arrivals += len(joins)
    st.price_on(engine._stretch_horizon_s(now_s, st.end_s), engine.join_ahead)  # (as `_joined_priced_on`)
    engine._limit(st, s + 1)
    engine._schedule_stretch_end(st)
    return True


def join_after_chunks(engine, st, chunk_fn, req, chunks: list[int], cached: int, n: int, first_new: int,
                      run_blocks: int, blocks: int, priced: int = 0) -> tuple[int, int, int, int, int]:
    """Price the chunk steps s0 = k, s0 + 1, ... of `req` (admitted at s0 with `cached` prompt
    tokens hit, its `n` other prompt tokens computed in `chunks` and then the rest) beside the
    decodes, and join it at the step after them as a whole prompt joins (`Stretch.join_one`),
    the chunks kept in `prompt_runs` with the `run_blocks` it held from s0 (`blocks`: all its
    prompt's). The scalar pricing state must be step s0's; `priced`: the first chunks' steps
    already in the stretch (a chained join's first chunk: s0 = k - 1, the state step k's).
    Returns its join step's scalar state (`Stretch.chain_at`)."""
    rem, s0 = st._sorted_rem, st.k - priced
    t, ends, done = st.end_s, [], cached + sum(chunks[:priced])
    for j, chunk in enumerate(chunks[priced:] if priced else chunks, st.k + 1):  # (j: the step after the chunk's)
        active = st._active
        t += chunk_fn(active, chunk)(done, st._ctx_sum)  # (memoised by the perf model: a decode leaving changes the batch)
        ends.append(t)
        done += chunk
        st._ctx_sum += active
        if st._p < len(rem) and rem[st._p] == j:
            st._leave(j)  # (the scalar state of the next step: decodes whose last token was this one's leave)
    st._append(ends)
    st.prompt_runs.append((s0, chunks, req, run_blocks))
    active, ctx_sum, rest = st._active, st._ctx_sum, cached + n - done
    step_fn = getattr(engine.perf, "prompt_step_s", None)  # (the form's floats without building it: the rest is any length)
    step_s = step_fn(active, rest, ctx_sum, done) if step_fn is not None else chunk_fn(active, rest)(done, ctx_sum)
    at = (st.k, active, ctx_sum, done, rest)
    st.join_one(req, n, first_new, blocks, step_s, engine._decode_forms(len(st.reqs) + 1), engine.kv.block_size,
                cached)
    return at


def apply_prompt_runs(st, frees: list[tuple[int, int]], prefill_at) -> tuple[list[tuple[int, int]], list[int]]:
    """The step log and the requests of the prompts that joined with chunks (`prompt_runs`),
    after `apply_joins` counted each whose join step ran as a whole prompt computed there: its
    chunks' tokens at their steps (a running request emitting nothing there), its blocks in use
    from s0; one whose join step did not run (the stretch cut inside its chunks) computed the
    chunks that ran. Returns (prefill_at, silent_at)."""
    k = st.k
    tokens = dict(prefill_at)
    silent = []
    for s0, chunks, req, blocks in st.prompt_runs:
        if s0 >= k:
            continue  # (a crash settled the stretch before its first chunk's step ended)
        last = s0 + len(chunks)
        ran = chunks[:k - s0]  # (all of them if its join step ran)
        for j, chunk in enumerate(ran, s0):
            tokens[j] = tokens.get(j, 0) + chunk
        silent += range(s0, s0 + len(ran))
        frees.append((s0, -blocks))
        if last < k:
            tokens[last] -= sum(chunks)
            frees.append((last, blocks))  # (`apply_joins` counted them from its join step)
        else:
            req.num_computed_tokens += sum(ran)
    return list(tokens.items()), silent
