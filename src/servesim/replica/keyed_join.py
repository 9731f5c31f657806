"""A request with prefix keys (a conversation's next turn) joining a stretch in flight.

`replica/stretch_join.py` admits fresh requests into a stretch at the step boundary after a
cut; a request with prefix keys ended the stretch instead, because stepping's admission at that
boundary, step s, sees the KV cache as the stretch's steps up to s leave it (the decodes'
blocks popped from the free queue, which may evict cached blocks, and their completed blocks
registered), while a stretch applies all that only when it ends. On a sessions workload every
arrival has keys: 3,198 of 4,000 arrivals ended a stretch at 1 replica (vllm), 3,536 at 8.

The turn joins without settling the stretch when what its admission reads and writes is the
same before those effects as after them (checked here, cheaply, else the stretch ends as
before):

- its prefix hits lie in blocks nobody holds (in the free queue: stepping's admission takes
  each out of it, as here, and counts it as used from step s on) and outside the free-queue
  entries the decodes' pops up to step s take (`FreeQueue.head_evicts`): those pops evict the
  same blocks now or later, and no hit is among them. The pops of the turn's own new blocks
  and of the stretch then take the same blocks of the queue in either order (the stretch's
  come from those free when it was planned, less those the joiners took). Or in blocks that
  a request still running at step s holds (Mooncake's shared first blocks: a reference more
  in either order, `held_hits.py`), or, for a whole prompt, only requests that left before s
  (its previous turn, its growth and registrations made first: taken back, `held_hits.py`);
- the keys it registers (its prompt's full blocks past its hits, which also bound what its
  lookup could find) are neither indexed nor in the registrations the stretch planned
  (`KVCacheManager.keys_conflict_many`'s kept plan, which covers every step of the stretch):
  the decodes' registrations and the pops' evictions up to step s cannot change them;
- vLLM's own admission (`VLLMScheduler`: `schedule`, `admit`, `first_chunk`; or a
  `KeyedScheduler`'s, `priority` and `edf`, whose `_admit` of a lone waiting request that fits
  is vLLM's, with static keys that sort it after every running request; `hygen`'s with no
  offline request; `andes`'s, the turn its only pending request and the KV use kept under
  its knapsack's threshold (`join_blocks`); `autellix`'s, its stepping accounting up to the
  admission kept by the join (`keyed_joined`); `fastswitch`'s with one tenant held, whose walk
  is then in arrival order; `continuum`'s, a lone call whose job holds no pin and no policy
  timer due; `batchllm`'s, its plan's lone group admitted whole while a bound of its
  projected KV use stays within its threshold, the latest arrival sorted last; or `trtllm`'s
  under GUARANTEED_NO_EVICT, the turn's whole reservation within the room, its context whole
  after the generation requests: `joins_last`),
  the only waiting request (which policies: `keyed_admission.admits_keyed`), whole in
  the budget the decodes leave (or its later chunks at s + 1, ...: `replica/keyed_chunk_join.py`;
  at the rest step of a turn that joined with chunks, the budget the rest leaves, the turn kept
  waiting through those chunks: `keyed_chunk_join.chains_after_rest`),
  and its blocks (hits and new) within those the stretch counts free (as `join_arrivals`).

Then it is admitted now as vLLM's `admit` would (the lookup, hits and registration done now), its
step s is priced with its prompt beside its cached context, and from step s + 1 it decodes
with the others, registering its decode blocks as the stretch's keyed requests do (checked for
conflicts with the rest by `Engine._limit`). Exact: `tests/cluster/test_keyed_join.py` runs
busy conversations fast-forwarded and stepped, step log included.

Policies that never look a request up (`Scheduler.looks_up_prefixes`: sarathi, vtc, orca) have
no keys where keyed joins are on: both are for runs where nothing reads the caches from outside.
"""

from __future__ import annotations

from bisect import bisect_right
from math import inf as INF
from typing import Any, NamedTuple

from servesim.replica import policy_stops
from servesim.replica.block_keys import BlockKeys
from servesim.replica.finish_notices import tell_last, untold_by
from servesim.replica.held_hits import departed_only, log_shared, settle_departed, take_back
from servesim.replica.join_keys import REFUSED, add_keyed, unplanned
from servesim.replica.keyed_chunk_join import chunks_fit, join_in_chunks
from servesim.replica.kv_prefix_caching import WHOLE
from servesim.replica.schedulers.arrival_joins import never_computed
from servesim.replica.stretch import Stretch
from servesim.replica.stretch_join import MAX_EXTRA_DEPARTED, _priced_on, departs_together, prompts_at_s
from servesim.workload.request import Request


def with_keys(engine, st) -> bool:
    """Is this join `keyed_join`'s (a plain stretch holding requests with prefix keys, or one
    waiting request with keys, where keyed joins are on) rather than `join_arrivals`'?"""
    sched = engine.scheduler
    return engine.keyed_joins and type(st) is Stretch and bool(
        st.keyed or (engine.keys_seen and len(sched.waiting) == 1
                     and next(iter(sched.waiting)).kv_block_keys is not None))


class _Turn(NamedTuple):
    """The waiting turn that may join at step s, as `_fits` found it."""

    req: Request
    s: int  # its join step (the stretch's k)
    n: int  # its prompt's tokens past its hits
    c: int  # those in step s (n, or its first chunk's)
    cached: int  # tokens in its hit blocks
    hits: Any  # its lookup (`get_computed_blocks`)
    stall: bool  # a prompt-only step s (`stalls_decodes`)
    chain: tuple | None  # the rest of a turn that joined with chunks, at step s (`Stretch.chain_at`)
    chunked: tuple | None  # its chunks' form and steps (`chunks_fit`)
    num_running: int  # requests running at step s
    blocks: int  # its blocks, hits and new
    shared: int  # its hits on blocks a running request holds
    back: list | tuple  # its hits on blocks held only by requests that left before step s (`departed_only`)
    kept: tuple | None  # the stretch's registration plan, checked against its runs


def keyed_join(engine, st: Stretch, now_s: float) -> bool:
    """At `now_s`, the end of the stretch `st` (cut by an arrival), one request waiting: admit
    it into the stretch if the conditions above hold, and price on. True if it joined (the
    stretch's end event is rescheduled); False changes nothing the simulation reads later (but
    for the finishes at its last step, told as stepping's step end tells them: `tell_last`)."""
    found = _waiting_turn(engine, st, now_s)
    turn = _fits(engine, st, *found) if found is not None else None
    if turn is None:
        return False
    priced = _step_s(engine, st, turn)
    if priced is None:
        return False
    _join(engine, st, now_s, turn, *priced)
    if turn.chunked is not None and (
            bound_s := engine.scheduler.next_timer_s() if st.timers is None else st.timers[0]) != INF:
        # (chunk steps priced past the first timer the stretch must stop at, continuum's pin
        # sharing a block: its `schedule` there is stepping's; the turn cut inside its chunks
        # as by an arrival. The pins of departures in the stretch: `_priced_on`'s `_limit`)
        policy_stops.stop_before(st, bound_s)
    # (after `join_one`, a stall or a turn's chunks the scalar state is step s + 1's: `price_on`
    # prices from it, as for `join_arrivals`' lean join (and takes `price` without that state);
    # at a busy replica among many `join_ahead` steps by the scalar loop, not a numpy chunk to a
    # horizon `lookahead` arrival gaps away that the next turn routed here cuts a few dozen steps
    # on: since cl31 an uncut stretch's end extends it from that state by as many again, so the
    # chunk is not paid later either. The same floats)
    return _priced_on(engine, st, now_s, turn.s, 1)


def _waiting_turn(engine, st: Stretch, now_s: float) -> tuple | None:
    """(the turn, step s, the rest chained at s, requests running at s, the policy's next timer,
    a finish pin kept: `Stretch.kept`) where the stretch, the policy and its queue let the one
    waiting request join at step s; None where they do not."""
    sched = engine.scheduler
    if (type(st) is not Stretch or not st.through or st.limited or st._perf is not engine.perf
            or engine.ports is not None or len(sched.running) != len(st.reqs) or sched.num_waiting != 1):
        return None
    s = st.k
    if engine.notice is not None and untold_by(st, s) and not tell_last(engine, st, now_s):
        return None  # (finishes at step s - 1 told, or one not told yet: `finish_notices.tell_last`)
    chain = None  # (step s runs a joined turn's rest: the turn kept waiting inside its chunks joins beside it)
    if st.rests and st.rests[-1][0] >= s:
        chain = st.chain_at
        if chain is None or chain[0] != s or st.rests[-1][0] != s or st.joins[-1][0] != s:
            return None  # (cut inside a turn's chunk steps: the budget is its chunks' up to its last)
    if sched.reorders_running and departs_together(st, s):
        return None  # (two leave at step s, which the stretch ends before: `Engine._limit`)
    rem = st._sorted_rem
    num_running = len(rem) - bisect_right(rem, s)
    if len(st.reqs) - num_running > num_running + MAX_EXTRA_DEPARTED:
        return None
    req = next(iter(sched.waiting), None)
    if req is None:
        return None  # (the one waiting is in a queue of its own: hygen's offline requests)
    if st.timers is not None and st.timers[1]:  # (pins that expired inside the stretch before step s)
        policy_stops.fire_before_join(sched, st)
    if not never_computed(req) or len(sched.running) >= sched.limits[0] or not sched.joins_last(req, now_s):
        return None
    if (timer_s := sched.next_timer_s()) <= now_s:
        return None  # (a policy timer due at step s: stepping's `schedule` there acts on it first)
    if (timed := st.kept) is not None and rem[0] < s and policy_stops.first_shared_pin(st, engine.kv, now_s) <= now_s:
        return None  # (a finish processed late set one due there on shared blocks: a pin the stretch stops at)
    if timed is None and sched.keeps_blocks(req):
        return None  # (its finish would pin in a stretch that counts every finish's blocks freed)
    return req, s, chain, num_running, timer_s, timed


def _fits(engine, st: Stretch, req: Request, s: int, chain: tuple | None, num_running: int, timer_s: float,
          timed: tuple | None) -> _Turn | None:
    """The turn's lookup, step s's share of it and its blocks, if its hits, blocks and keys
    let it join as the module's conditions say (None if not)."""
    sched, kv = engine.scheduler, engine.kv
    settle_departed(kv, st, s, req)  # (its previous turn's blocks, if it left before s: registered now)
    hits = kv.get_computed_blocks(req)
    if hits.num_own:
        return None
    bs = kv.block_size
    cached = hits.num_keyed * bs
    num_tokens = req.num_tokens
    n = num_tokens - cached
    # A prefill-first policy (`stalls_decodes`: vLLM V0) runs the prompt whole in a step of its
    # own, the decodes stalled (`joins_last` checked its budget); the others, beside the decodes
    stall = sched.stalls_decodes
    # (beside a rest, the budget its decodes and the rest leave, as `chain_join`'s: no stall there)
    spent = num_running if chain is None else chain[1] + chain[4]
    c = n if stall else sched.first_chunk(req, cached, sched.limits[1] - spent)
    chunked = None  # (the chunk form, the chunks of steps s .. s + q - 1: its rest at s + q)
    if c != n and (((timer_s != INF or timed is not None or st.timers) and not sched.timers_only_free())
                   or (chunked := chunks_fit(engine, st, req, s, c, n, num_running)) is None
                   or len(chunked[1]) > sched.max_join_chunks):
        # a chunk of its prompt whose later steps are not certain (or priced past a policy
        # timer that may change them; continuum's pins only free blocks there, and `keyed_join`
        # cuts the chunk steps at the first timer the stretch stops at; or middle chunks of a
        # policy that may run them before the decodes: `max_join_chunks`)
        return None
    blocks = -(-num_tokens // bs)  # (its hits, all taken from the free queue, and its new blocks)
    # (and the blocks the policy keeps free beyond a join's: `join_blocks`, none but Andes's,
    # whose knapsack would run at step s past its KV use threshold)
    free = st.free_blocks - st.join_blocks - blocks - sched.join_blocks(((req, c),))[1]
    # (`blocks_bound`: an upper bound of the decodes' pops up to step s, without a pass over
    # them unless it is too large; up to s + q with chunks, whose later ones take blocks there)
    # (a prompt-only step s: its `schedule` admits before any decode of step s, which grows nothing)
    steps = (s if stall else s + 1) if chunked is None else s + len(chunked[1]) + 1
    pops = st.blocks_bound(steps, bs)
    if pops > free and (pops := st.blocks_needed(steps, bs)) > free:
        return None
    prefix = kv._prefix
    shared, back = 0, ()
    if hits.num_keyed:
        if shared := hits.num_keyed - prefix.num_free(hits):
            if stall:  # (any held one for a prompt-only step: its blocks are counted as stall32 built it)
                return None
            # hit blocks held only by requests that left before step s: stepping freed them at
            # their finish and takes them back from the free queue (`held_hits.py`; a whole
            # prompt only, and no finish that keeps its blocks)
            back = departed_only(kv, st, s, hits)
            if back is None or (back and (chunked is not None or chain is not None or timed is not None)):
                return None
        groups = [g for g, _, _ in hits.extents]
        # (the rests of turns that joined with chunks pop their blocks before step s too)
        later = sum(n for _, _, n in st.rests) if st.rests else 0
        if (kv._queue.head_evicts(pops + later, groups)
                and kv._queue.head_evicts(st.blocks_needed(steps, bs) + later, groups)):
            return None  # a hit block that the decodes' pops up to step s evict
    keys = req.kv_block_keys
    if keys is not None and type(keys) is not BlockKeys:
        return None
    end = 0
    if keys is not None:
        end, nb = num_tokens // bs, keys.num_blocks
        if nb < end:
            end = nb
    kept = None  # the stretch's registration plan, checked against the runs this turn registers
    if end > hits.num_keyed:  # (its lookup read at most these keys past its hits)
        runs = prefix.unindexed(keys, hits.num_keyed, end)
        if runs is None or (kept := unplanned(kv, st, keys, runs, hits.num_keyed, s,
                                                  s - 1 if chunked is None else steps - 1)) is REFUSED:
            return None
    return _Turn(req, s, n, c, cached, hits, stall, chain, chunked, num_running, blocks, shared, back, kept)


def _step_s(engine, st: Stretch, t: _Turn) -> tuple[float, bool] | None:
    """(step s's time with the turn, whether the lean join takes it: the scalar state is step
    s's, no chunks, no rest), the stretch's scalar state brought to step s; None where a form
    the pricing needs is missing."""
    s, n, c, cached, chain, chunked, num_running = t.s, t.n, t.c, t.cached, t.chain, t.chunked, t.num_running
    step_s = None
    if chain is not None:
        # step s with both prompts, the rest first (`PerfModel.prompts_step_s`, as `chain_join`),
        # and the scalar state of step s from the lists, the first turn there a decode of its
        # prompt less one token that `join` moves to its whole prompt (as `_chain_whole`)
        _, active, ctx_sum, done, rest = chain
        form = getattr(engine.perf, "prompts_step_s", None)
        if form is None or (step_s := form([(rest, done), (c, cached)], active, ctx_sum)) is None:
            return None
        st._sync()
    elif t.stall:
        # the scalar state of step s (as `stretch_join.stall_step_s`), and stepping's call for
        # the step that runs the prompt alone beside its cached context (`_start_lone`'s)
        if st._priced != s or st._f is None:
            if st._priced != s:
                st.truncate(s)
            st._sync()
        if st._f is False:
            return None
        step_s = engine.perf.step_time_s([(n, cached)], [])
    elif chunked is None and st._forms is not None and (st._f is None or st._priced != s):
        # A stretch priced ahead by numpy chunks (each replica's among many: its horizon lies
        # arrival gaps away) and cut here: the steps past s dropped and the scalar state of
        # step s rebuilt from exact integers, as `join_arrivals` does, so that the turn's step
        # is priced from the context sum and it takes the lean `join_one` and `price_on`
        # (without, an 8-replica turn paid a pass over the batch in `step_time_s` and
        # `join`'s truncation; `price_on` falls back to `price` with many departures ahead)
        if st._priced != s:
            st.truncate(s)
        st._sync()
    # (the scalar state is step s's)
    lean = chain is None and chunked is None and st._f is not None and st._priced == s
    if chunked is None and not t.stall and chain is None:  # (else priced above, or by `join_in_chunks`)
        # stepping prices its prompt beside its cached context and the decodes': from their
        # context sum where the scalar state is step s's, as any join's (`prompts_at_s`)
        step_s = prompts_at_s(engine.perf, st, s, num_running, [(n, cached)])
    return step_s, lean


def _join(engine, st: Stretch, now_s: float, t: _Turn, step_s: float, lean: bool) -> None:
    """Admit the turn as the policy's `join` would and add it to the stretch at step s."""
    sched, kv, req, s, n, c, cached = engine.scheduler, engine.kv, t.req, t.s, t.n, t.c, t.cached
    bs, num_tokens, kept, chain, chunked, blocks, shared = (kv.block_size, req.num_tokens, t.kept, t.chain, t.chunked,
                                                            t.blocks, t.shared)
    # the policy's `join` (`admit_whole`) with the hits just found: `VLLMSteps.admit`'s calls
    # for a request without KV store tokens, admitted whole (or with its first chunk c)
    sched.before_join()
    if t.back:
        take_back(st, s, t.back)
    if not kv.allocate_slots(req, c, t.hits):
        raise AssertionError(f"request {req.id} could not join the stretch")
    sched.waiting.remove(req)
    sched.start(req, cached, c, st.out)
    if req.first_scheduled_s is None:
        req.first_scheduled_s = now_s
    sched.keyed_joined(req)
    if shared and st.own_pins:  # (it shares a running request's blocks now: whose pins are own asked again)
        st.own_pins.clear()
    if t.stall:
        ctx1 = num_tokens - s
        _stall_keyed(kv, st, s, kept)
        st.stall([(req, n)], [kv.num_blocks_of(req.id) * bs - ctx1 + 1], blocks, step_s,
                 engine._decode_forms(len(st.reqs) + 1), bs, cached)
    else:
        if kept is not None:  # (its prompt's runs entered the index, none of them planned: the plan stays valid)
            kv._planned = (*kept[:3], kv._prefix.num_inserts, *kept[4:])
        if chunked is not None:
            if chain is not None:  # (its first chunk's step s beside the rest, then the state of s + 1)
                st._append([st.end_s + step_s])
                st._sync()
            ctx1 = join_in_chunks(engine, st, req, *chunked, cached, blocks, shared, chain is not None)
        else:
            ctx1 = num_tokens - s  # (its context at step s + 1, less s: the stretch's frame)
            first_new = kv.num_blocks_of(req.id) * bs - ctx1 + 1
            forms = engine._decode_forms(len(st.reqs) + 1)
            # (hits on blocks running requests hold were in use before the join and come from no
            # free queue: the stretch counts the others as taken, the step log all from step s less those)
            if lean:
                st.join_one(req, n, first_new, blocks - shared, step_s, forms, bs, cached)
            else:
                st.join([(req, n)], [first_new], blocks - shared, step_s, forms, bs, cached)
            if shared:
                log_shared(st, s, shared)
            if chain is not None:
                st.chain_at = None  # (whole: no chunk step of its own to wait through)
        if chain is not None:  # (kept waiting from the step after its arrival's: `add_waiting`)
            st.waiting_to = [*(st.waiting_to or ()), s]
    if req.kv_block_keys:  # it registers its decodes' blocks up to its last step, as the other keyed requests
        add_keyed(st, req, ctx1, num_tokens - ctx1)  # (its join step s = num_tokens - ctx1)


def _stall_keyed(kv, st: Stretch, s: int, kept: tuple | None) -> None:
    """A prompt-only step at s (`Stretch.stall`) moves each keyed request running at s one step
    later in the stretch's frame: its (request, ctx1) entry one token fewer and its last step
    one later, as `stall` moves `ctx1` and `remaining` (the tokens it holds at each later step,
    which its registrations read, are then stepping's). The stretch's whole registration plan
    (`kept`, checked against the turn's runs, or one the turn inserted nothing beside) stays
    valid: each request registers up to its last step, the same tokens (ctx1 + last); its
    tokens and caps, which trim it when the stretch is cut (`_apply_planned`), move the same
    way. Any other plan is dropped (`_limit` plans again)."""
    keyed, last = st.keyed, st.keyed_last
    prefix = kv._prefix
    planned = kv._planned if kept is None else (*kept[:3], prefix.num_inserts, *kept[4:])
    if not (planned is not None and planned[0] is keyed and planned[2] == WHOLE and planned[3] == prefix.num_inserts):
        planned = None
    kv._planned = planned
    if last is None:
        return
    stalled = []
    for i, j in enumerate(last):
        if j >= s:  # (its last step at or after s: running at s)
            r, c = keyed[i]
            keyed[i] = (r, c - 1)
            last[i] = j + 1
            stalled.append(r)
    if planned is not None and stalled:
        _, _, _, _, plan, tokens, caps = planned
        items = plan[0]  # (an item per request with blocks to register; joins append theirs)
        if st.plan_at is None or st.plan_at[0] is not items:
            st.plan_at = [items, {}, 0]
        _, at, mapped = st.plan_at
        if mapped < len(items):
            at.update({id(items[i][0]): i for i in range(mapped, len(items))})
            st.plan_at[2] = len(items)
        held_of = kv._held
        for r in stalled:
            i = at.get(id(held_of.get(r.id)))
            if i is not None:
                tokens[i] -= 1
                caps[i] += 1
