"""A prompt's chunks, its last chunk and the decode steps after it as one stretch (Sarathi-Serve).

A chunk stretch (`replica/chunk_stretch.py`) stops before the prompt's last chunk: the step that
computes the rest may admit a waiting request with the budget it leaves, and from the next step
on the prompt decodes with the others. With nothing waiting that ending cost a cycle per prompt:
the chunk stretch applied, a `schedule` running the decodes and the rest, a decode stretch
planned from the request objects (sarathi sessions, 4,000 requests at 8 replicas: 1,921 of
5,966 schedules). Here the step that admitted the prompt (or ran a later chunk of it) plans
the whole of it as a plain `Stretch` through finishes, as a long prompt that joins a stretch in
flight is planned (`chunk_join.join_after_chunks`): step 0 runs the decodes and the chunk just
scheduled, steps 1 .. q - 1 the decodes still running and a chunk of the budget they leave, step
q the decodes and the rest (its first token), and from q + 1 on the prompt decodes with the
others (an entry of `Stretch.joins` at q, its chunks kept in `Stretch.prompt_runs`, its blocks
all taken at admission: none join with it).

Stepping admits nothing in steps 0 .. q - 1 (the prompt spends the budget), so an arrival whose
first step is one of them (or q) waits as in a chunk stretch, and the stretch then ends at q,
where stepping's `schedule` admits it beside the rest (`rest_keeps_arrival`; one seen from
q + 1 on cuts it as any arrival does); there it may join the stretch instead, as beside a joined
prompt's rest (`Stretch.chain_at`, `chunk_join.chain_join`). A cut, a finish's follow-up arriving
at once or the KV limit inside the chunk steps leaves the prompt with the chunks that ran
(`apply_prompt_runs`), as stepping.
Planned only where stepping's steps are certain: a prompt computed for the first time, nothing waiting, a decode running in every
step up to q, finishes processed late (`chunks_through`) with a decode stretch's conditions
(`FastForward.through_finishes`, no step cap, no timer), the scalar chunk and decode forms.
Exact as stepping: tests/cluster/test_chunk_rest.py.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from servesim.replica.block_keys import BlockKeys, keyed_pairs
from servesim.replica.join_keys import add_keyed
from servesim.replica.schedulers.outputs import UNLIMITED_STEPS
from servesim.replica.stretch import Stretch


def chunks_then_decodes(engine, now_s: float, out, decodes: list, decode_ctxs: list[int], prompt, c: int,
                        ff, shared: tuple | None = None) -> bool:
    """Plan the step just scheduled (`decodes` and the chunk `c` of `prompt`, unfinished), the
    prompt's later chunks, its rest and the decode steps after it as one `Stretch`, if the
    steps above are certain and at least two are safe; False, changing nothing, otherwise.
    `shared`: (request, tokens) of a prompt whose last chunk step 0 also runs (Sarathi's shared
    step, `replica/shared_chunk.py`): a prompt finished in step 0 of the stretch, decoding from
    step 1 on with the others."""
    if not _may_plan(engine, prompt, decodes or shared, ff):
        return False
    reqs, ctx1 = decodes, [x + 1 for x in decode_ctxs]  # (and the shared prompt: its context after step 0)
    prefills, chunks0 = [], [(c, prompt.num_computed_tokens)]
    if shared is not None:
        first, r = shared
        prefills = [shared]
        reqs, ctx1 = decodes + [first], ctx1 + [first.num_computed_tokens + r]
        chunks0.insert(0, (r, first.num_computed_tokens))
    keyed = keyed_pairs(reqs, ctx1)
    keys = prompt.kv_block_keys
    if (keyed or keys) and not engine.keyed_through:
        return False
    if keys is not None and type(keys) is not BlockKeys and not keys:
        keys = None
    forms = engine._decode_forms(len(reqs) + 1)
    chunk_fn = getattr(engine.perf, "chunk_time_fn", None)
    run_fn = getattr(engine.perf, "chunk_run_fn", None)
    if forms is None or chunk_fn is None or run_fn is None or chunk_fn(len(decodes), c) is None:
        return False  # (no scalar forms: sliding windows)
    remaining = [r.output_len - r.num_output_tokens for r in reqs]  # (tokens to emit, step 0's included)
    rem = sorted(remaining)
    # The chunks of steps 1, 2, ...: the budget the decodes still running there leave (step 0's
    # is c, what all of them and the shared prompt's last chunk left), up to the step q whose
    # budget covers the rest
    budget = c + len(decodes) + (shared[1] if shared is not None else 0)
    done0 = prompt.num_computed_tokens + c  # (the prompt's tokens in KV when step 1 starts)
    plan = _full_chunks(rem, budget, prompt.num_tokens - done0)
    if plan is None:
        return False
    chunks, runs, q = plan
    end0 = now_s + engine.perf.step_time_s(chunks0, decode_ctxs)
    horizon_s = engine._stretch_horizon_s(now_s, end0)
    st = Stretch(now_s, end0, out, decodes, prefills, reqs, ctx1, remaining, True, engine._decode_fn, engine.perf,
                 0, engine._decode_forms, keyed)
    kv, bs = engine.kv, engine.kv.block_size
    st.first_new = kv.first_new_block_steps(reqs, ctx1)
    st.free_blocks = kv.num_free_blocks
    if keyed:
        st.keyed_last = [r.output_len - r.num_output_tokens - 1 for r, _ in keyed]
    # steps 1 .. q - 1 priced from the scalar state of step 1 (a new stretch's), a run between
    # departures at a time, then the rest's step q, where the prompt joins as a whole prompt
    # computed by the stretch (step 0's chunk included) beside what it had in KV before
    done = _chunk_steps(st, run_fn, runs, done0)
    step_s = chunk_fn(st._active, prompt.num_tokens - done)(done, st._ctx_sum)
    first_new = kv.num_blocks_of(prompt.id) * bs - (prompt.num_tokens - q) + 1
    st.prompt_runs.append((0, [c] + chunks, prompt, 0))  # (its chunks from step 0, for the views and the step log)
    computed0 = prompt.num_computed_tokens
    # (the scalar state of the rest's step q: an arrival kept waiting inside the full chunks may
    # join there beside the rest, as beside a joined prompt's: `chunk_join.chain_join`)
    st.chain_at = (q, st._active, st._ctx_sum, done, prompt.num_tokens - done)
    st.join_one(prompt, prompt.num_tokens - computed0, first_new, 0, step_s, forms, bs, computed0)
    # its blocks, all taken at admission, are in use before the stretch: the step log's count
    # from its join step (`apply_joins`) is taken back there, as for a joiner's held hits
    st.join_shared = [(q, kv.num_blocks_of(prompt.id))]
    st.spent_to = q
    if keys is not None:  # it registers its decodes' blocks up to its last step, as the other keyed requests
        add_keyed(st, prompt, prompt.num_tokens - q, q)
    st.price_on(horizon_s, engine.join_ahead)  # (on from the scalar state the rest's join left, as after a join)
    if not engine._limit(st, 1) or st.k <= q:
        return False  # (the chunk stretch then: it goes to the rest's step without the join's)
    engine.stretch = st
    engine._schedule_stretch_end(st)
    return True


def _may_plan(engine, prompt, decoding, ff) -> bool:
    """May the prompt's rest and the decode steps after it be planned as one stretch: the
    policy's answer repeats through finishes without limits or admissions, finishes may be
    processed late and nothing waits? (`decoding`: a decode or a shared prompt runs beside it.)"""
    sched = engine.scheduler
    # (not a preempted prompt being computed again, with tokens it emitted before: under KV
    # pressure its plan left a request running that stepping had not, found by the chain-join
    # test's tight cache once both were merged; left to the chunk stretch)
    return not (not sched.rest_joins_decodes or prompt.num_output_tokens or sched.num_waiting or not decoding
                or not (ff.repeat and ff.after_prefill) or not ff.through_finishes or ff.admissions_only
                or ff.max_steps != UNLIMITED_STEPS or ff.finish_timer_s != float("inf")
                or not engine.defer_finishes or engine.deliver is not None
                or (engine.notice is not None and sched.arrival_reads_finishes))


def _full_chunks(rem: list[int], budget: int, left: int) -> tuple[list[int], list[tuple[int, int]], int] | None:
    """The prompt's full chunks from step 1 on (`left` tokens of it after step 0): each step's
    is the budget the decodes still running there leave (`rem`: their remaining counts,
    sorted), up to the step q whose budget covers the rest. (chunks, runs of (chunk, steps), q);
    None if a step before q would have no decode (the prompt alone: left to stepping)."""
    chunks, runs, j, total = [], [], 1, len(rem)
    p = bisect_right(rem, j)
    while True:  # (a run of steps at a time: the batch, so the chunk, holds up to the next departure)
        if p == total:
            return None
        cap = budget - (total - p)
        if left <= cap:
            return chunks, runs, j  # (step j computes the rest and emits the first token)
        # full chunks from step j while the rest is more than one (at most up to the departure)
        m = min((left - 1) // cap, rem[p] - j)
        chunks += [cap] * m
        runs.append((cap, m))
        left -= m * cap
        j += m
        p = bisect_right(rem, j, p)


def rest_keeps_arrival(engine, st: Stretch, req, now_s: float) -> bool:
    """Asked before `add_request` takes `req` in, while `st` (a stretch of `chunks_then_decodes`)
    runs: is its first step (the one after the step in flight) one of the prompt's full chunks
    or the rest's step `spent_to`, and may it wait through them (`Engine.arrival_keeps` as for a
    chunk stretch)? Changes no state. (One first seen at the rest's step waits to it too rather
    than cut the stretch there: so every newcomer that may join beside the rest, `chain_at`,
    was logged waiting, as `chunk_join.keeps_in_chunks` keeps them.)"""
    # (the first step to see it as `Stretch.add_waiting` logs it: events at a step's end come first)
    return bisect_left(st._endv, now_s, 0, st.k) + 1 <= st.spent_to and engine.arrival_keeps(True, req)


def end_at_rest(engine, st: Stretch, now_s: float) -> None:
    """`req` waits from the step after the one in flight: the stretch ends at the rest's step
    `spent_to` (stepping's `schedule` there admits it beside the rest), which it reaches, as
    priced or extended."""
    st.add_waiting(now_s)
    q = st.spent_to
    if st.k > q:
        st.truncate(q)
        st.final = True
        engine._schedule_stretch_end(st)
    else:
        st.kmax = q


def _chunk_steps(st: Stretch, run_fn, runs: list[tuple[int, int]], done: int) -> int:
    """Price the prompt's chunk steps 1, 2, ... beside the decodes from the scalar state of step
    1, each run of steps between departures (`runs`: (chunk, steps)) in one call
    (`PerfModel.chunk_run_fn`: `chunk_join.join_after_chunks`' floats, step by step there),
    leaving the scalar state of the step after them; `done`: the prompt's tokens in KV at step
    1. Returns those after them."""
    rem, ends, t, j = st._sorted_rem, [], st.end_s, 1
    for chunk, m in runs:
        active = st._active
        _, t = run_fn(active, chunk)(t, done, st._ctx_sum, m, float("inf"), ends)
        done += m * chunk
        st._ctx_sum += m * active
        j += m
        if st._p < len(rem) and rem[st._p] == j:
            st._leave(j)  # (decodes whose last token was step j - 1 leave before step j)
    st._append(ends)
    return done
