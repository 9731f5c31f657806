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

- its prefix hits lie either in blocks nobody holds (in the free queue: stepping's admission
  takes each out of it, as here, and counts it as used from step s on) outside the free-queue
  entries the pops before its lookup take (the decodes' up to step s, and those of the requests
  admitted before it: `FreeQueue.head_evicts`; those pops evict the same blocks now or later,
  and no hit is among them), or in blocks a request still running at step s holds (a
  reference more in either order, in use before the join: `Stretch.join_shared`); not in a
  block only requests that left the stretch before s hold (stepping freed it at their finish,
  and the step log counts that). The pops of its own new blocks and of the stretch then take
  the same blocks of the queue in either order (the stretch's come from those free when it was
  planned, less those the joiners took);
- the keys it registers (its prompt's full blocks past its hits, which also bound what its
  lookup could find) are neither indexed nor in the registrations the stretch planned
  (`KVCacheManager.keys_conflict_many`'s kept plan, which covers every step of the stretch):
  the decodes' registrations and the pops' evictions up to step s cannot change them, nor
  (apart from each other's) the registrations of the requests admitted before it;
- vLLM's own admission (`VLLMScheduler`: `schedule`, `admit`, `first_chunk`; or a
  `KeyedScheduler`'s, `priority` and `edf`, whose `_admit` of a lone waiting request that fits
  is vLLM's, with static keys that sort it after every running request; or `hygen`'s with no
  offline request: `joins_last`), every waiting request whole in the budget the decodes leave
  (vLLM's own admission: all of a burst, in queue order, each in what the ones before it
  leave; the others: a lone one), and their blocks (hits and new) within those the stretch
  counts free (as `join_arrivals`).

Then they are admitted now as vLLM's `admit` would, one after the other (the lookup, hits and
registration done now), step s is priced with their prompts beside their cached contexts, and
from step s + 1 they decode with the others, registering their decode blocks as the stretch's
keyed requests do (checked for conflicts with the rest by `Engine._limit`). Mooncake's
arrivals come in bursts (about nine requests an instant, two or three of them at each of 8
least-requests replicas) whose first hash blocks other running requests hold. Exact:
`tests/cluster/test_keyed_join.py` runs busy conversations and `test_keyed_bursts.py` Mooncake's
bursts fast-forwarded and stepped, step log included.
"""

from __future__ import annotations

from bisect import bisect_right

from servesim.replica.block_keys import BlockKeys
from servesim.replica.prefix_registration import _runs_from
from servesim.replica.schedulers.hygen import HyGenScheduler
from servesim.replica.schedulers.priority import KeyedScheduler
from servesim.replica.schedulers.vllm import VLLMScheduler
from servesim.replica.schedulers.vllm_steps import VLLMSteps
from servesim.replica.stretch import Stretch
from servesim.replica.stretch_join import MAX_EXTRA_DEPARTED, _join_step_s, _priced_on


def with_keys(engine, st) -> bool:
    """Is this join `keyed_join`'s (a plain stretch holding requests with prefix keys, or a
    waiting head with keys, where keyed joins are on) rather than `join_arrivals`' (which
    refuses requests with keys)?"""
    return engine.keyed_joins and type(st) is Stretch and bool(
        st.keyed or next(iter(engine.scheduler.waiting)).kv_block_keys is not None)


def keyed_join(engine, st: Stretch, now_s: float) -> bool:
    """At `now_s`, the end of the stretch `st` (cut by arrivals): admit the waiting requests
    into it if the conditions above hold for each, and price on. True if they joined (the
    stretch's end event is rescheduled); False changes nothing the simulation reads later."""
    sched, kv = engine.scheduler, engine.kv
    num_waiting = sched.num_waiting
    if (type(st) is not Stretch or not st.through or st.limited or st._perf is not engine.perf
            or engine.ports is not None or len(sched.running) != len(st.reqs)
            or (num_waiting != 1 and not (num_waiting and isinstance(sched, VLLMScheduler)))):
        return False  # (a burst joins vLLM's own admission only: the others admit a lone turn as vLLM)
    s = st.k
    rem = st._sorted_rem
    num_running = len(rem) - bisect_right(rem, s)
    if len(st.reqs) - num_running > num_running + MAX_EXTRA_DEPARTED:
        return False
    waiting = [next(iter(sched.waiting))] if num_waiting == 1 else list(sched.waiting)  # (admission order)
    max_num_seqs, max_num_batched_tokens, _, _ = sched.limits
    if len(sched.running) + num_waiting > max_num_seqs:
        return False
    bs = kv.block_size
    # (each one's hits and new blocks, as if every hit were taken from the free queue: at most
    # what the admissions take from it)
    blocks = sum(-(-req.num_tokens // bs) for req in waiting)
    free = st.free_blocks - st.join_blocks - blocks
    # (`blocks_bound`: an upper bound of the decodes' pops up to step s, without a pass over
    # them unless it is too large)
    pops = st.blocks_bound(s + 1, bs)
    if pops > free and (pops := st.blocks_needed(s + 1, bs)) > free:
        return False
    budget = max_num_batched_tokens - num_running
    checks = _Checks(engine, st, s, pops, num_waiting > 1)
    found = []  # (request, its hits, the tokens its step s computes)
    for req in waiting:
        hits = checks.arrival(req, budget)
        if hits is None:
            return False
        n = req.num_tokens - hits.num_keyed * bs
        found.append((req, hits, n))
        budget -= n
        checks.earlier += -(-req.num_tokens // bs)  # (the next one's lookup follows this one's pops)
    kept = checks.kept
    # the policy's `join` (`admit_whole`) with the hits just found: `VLLMSteps.admit`'s calls
    # for requests without KV store tokens, admitted whole, in queue order
    sched.before_join()
    prefix = kv._prefix
    joins, cached, blocks, shared = [], [], 0, 0
    for i, (req, hits, n) in enumerate(found):
        if i:  # (looked up again after the admissions before it, which registered none of its keys)
            n0, hits = hits.num_keyed, kv.get_computed_blocks(req)
            if hits.num_keyed != n0:
                raise AssertionError(f"request {req.id}'s hits changed within its burst")
        blocks += -(-req.num_tokens // bs)
        if hits.num_keyed:  # (hits a running request holds were in use already: not taken from the free queue)
            shared += hits.num_keyed - prefix.num_free(hits)
        if not kv.allocate_slots(req, n, hits):
            raise AssertionError(f"request {req.id} could not join the stretch")
        sched.waiting.remove(req)
        sched.start(req, req.num_tokens - n, n, st.out)
        if req.first_scheduled_s is None:
            req.first_scheduled_s = now_s
        joins.append((req, n))
        cached.append(req.num_tokens - n)
    if shared:
        blocks -= shared
        st.join_shared = [*(st.join_shared or ()), (s, shared)]
    if kept is not None:  # (their prompts' runs entered the index, none of them planned: the plan stays valid)
        kv._planned = (*kept[:3], prefix.num_inserts, *kept[4:])
    if any(cached):  # (stepping prices each chunk beside its cached context and the decodes')
        ctxs = [c + s - 1 for c, r in zip(st.ctx1, st.remaining) if r > s]
        step_s = engine.perf.step_time_s([(n, c) for (_, n), c in zip(joins, cached)], ctxs)
    else:
        step_s = _join_step_s(engine.perf, st, s, num_running, joins)
    forms = engine._decode_forms(len(st.reqs) + len(joins))
    # (each one's context at step s + 1, less s, is its prompt: the stretch's frame)
    first_new = [kv.num_blocks_of(req.id) * bs - (req.num_tokens - s) + 1 for req, _ in joins]
    if len(joins) == 1 and st._f is not None and st._priced == s:
        (req, n), = joins
        st.join_one(req, n, first_new[0], blocks, step_s, forms, bs, cached[0])
    else:
        st.join(joins, first_new, blocks, step_s, forms, bs, cached)
    for req, _ in joins:
        if req.kv_block_keys:  # it registers its decodes' blocks up to its last step, as the other keyed requests
            if st.keyed_last is None:
                st.keyed_last = []
            st.keyed.append((req, req.num_tokens - s))
            st.keyed_last.append(s + req.output_len - 1)
    return _priced_on(engine, st, now_s, s, len(joins))


class _Checks:
    """`keyed_join`'s checks of each waiting request, in admission order, before any is admitted:
    what the stretch answers once (its registration plan, step s's keys, the blocks its
    departed requests hold) is read at most once."""

    def __init__(self, engine, st: Stretch, s: int, pops: int, burst: bool) -> None:
        self.engine, self.st, self.s = engine, st, s
        self.pops = pops  # (the decodes' pops up to step s, or a bound of them)
        self.earlier = 0  # (at most the blocks the requests checked so far take from the free queue)
        self.kept = None  # the stretch's registration plan, once checked valid
        self._step = False  # the run keys step s registers (`_step_keys`), once asked
        self._runs: set | None = set() if burst else None  # the runs the requests checked so far register

    def arrival(self, req, budget: int):
        """`req`'s hits if it may join, admitted after the requests checked before it with
        `budget` tokens left; else None."""
        engine, st, s = self.engine, self.st, self.s
        kv, sched = engine.kv, engine.scheduler
        if (req.num_computed_tokens or req.num_output_tokens or req.num_preemptions or req.lora is not None
                or "kv_store_tokens" in req.extra or not sched.joins_last(req)):
            return None
        hits = kv.get_computed_blocks(req)
        if hits.num_own:
            return None
        bs = kv.block_size
        cached = hits.num_keyed * bs
        num_tokens = req.num_tokens
        if sched.first_chunk(req, cached, budget) != num_tokens - cached:
            return None  # a chunk of its prompt: stepping's next steps are not decodes
        prefix = kv._prefix
        if hits.num_keyed:
            if prefix.num_free(hits) != hits.num_keyed and self._held_by_departed(hits):
                return None  # a hit block that stepping would have freed and taken back
            groups = [g for g, _, _ in hits.extents]
            q, earlier = kv._queue, self.earlier
            if q.head_evicts(self.pops + earlier, groups) and q.head_evicts(st.blocks_needed(s + 1, bs) + earlier, groups):
                return None  # a hit block that the pops before its lookup evict
        keys = req.kv_block_keys
        if keys is not None and type(keys) is not BlockKeys:
            return None
        end = min(num_tokens // bs, keys.num_blocks) if keys is not None else 0
        if end > hits.num_keyed:  # (its lookup read at most these keys past its hits)
            runs = prefix.unindexed(keys, hits.num_keyed, end)
            if runs is None or not self._planned_apart(runs):
                return None
            if self._runs is not None:  # (a burst: an earlier one's keys would change its lookup)
                if not self._runs.isdisjoint(runs):
                    return None
                self._runs.update(runs)
        return hits

    def _planned_apart(self, runs) -> bool:
        """Are `runs` apart from the stretch's planned registrations (`keys_conflict_many`'s
        plan, still valid, up to its last step k - 1 = s - 1 at least) and those of step s
        (stepping's `schedule` there registers them before the admission)?"""
        st, s = self.st, self.s
        if not st.keyed:
            return True
        kv = self.engine.kv
        planned = kv._planned
        if (planned is None or planned[0] is not st.keyed or planned[2] < s - 1
                or planned[3] != kv._prefix.num_inserts):
            return False
        if not planned[4][1].isdisjoint(runs):  # (the plan's runs, as a set)
            return False
        if planned[2] < s:
            if self._step is False:
                self._step = _step_keys(st, s, kv.block_size)
            if self._step is None or not self._step.isdisjoint(runs):
                return False
        self.kept = planned
        return True

    def _held_by_departed(self, hits) -> bool:
        """Is a held block among `hits` held only by requests that left the stretch before
        step s? Stepping freed it at their finish and its admission takes it back from the
        free queue, which the step log and views count; a block a request still running holds
        is hit alike in either order (a reference more, freed by nobody)."""
        st, s = self.st, self.s
        held = self.engine.kv._held
        over = []  # (group, first, end): a departed request's hold on a hit slot range
        for req, r in zip(st.reqs, st.remaining):
            if r <= s and (h := held.get(req.id)) is not None:
                for g, a, b in h.segs:
                    for g2, p0, p1 in hits.extents:
                        if g is g2 and a < p1 and p0 < b:
                            a, b = max(a, p0), min(b, p1)
                            if h.dups and any(d0 < b and a < d1 for d0, d1 in h.dups):
                                return True  # (copies there: a position is not its group's slot)
                            over.append((g, a, b))
        if len(over) == 1:  # (the usual case: one departed holder of the shared first blocks)
            g, a, b = over[0]
            return min(g.ref[a - g.lo:b - g.lo]) <= 1
        # each range of slots with the same departed holders: held by more than those?
        for g in {id(g): g for g, _, _ in over}.values():
            mine = [(a, b) for g2, a, b in over if g2 is g]
            cuts = sorted({x for ab in mine for x in ab})
            for a, b in zip(cuts, cuts[1:]):
                c = sum(1 for a2, b2 in mine if a2 <= a and b <= b2)
                if c and min(g.ref[a - g.lo:b - g.lo]) <= c:
                    return True
        return False


def _step_keys(st: Stretch, s: int, bs: int) -> set | None:
    """The run keys the stretch's keyed requests register at step s beyond those of steps up
    to s - 1: a block each whose last token step s computes (`keys_conflict_many`'s ends);
    None if some are not known (keys that are not runs of one length)."""
    out: set = set()
    for (req, ctx1), last in zip(st.keyed, st.keyed_last):
        t = ctx1 + s
        if last >= s and t % bs == 0:
            keys = req.kv_block_keys
            b = t // bs - 1  # (the block that token completes)
            if b < keys.num_blocks:
                runs = _runs_from(keys, b, b + 1)
                if runs is None:
                    return None
                out.update(runs)
    return out


def admits_keyed(engine) -> bool:
    """Can requests with prefix keys join this engine's stretches (where nothing reads its
    prefix cache from outside)? The vLLM cache's prefix caching (keyed stretches through
    finishes) and vLLM's own admission; fixed for a run, so `keyed_join` need not ask (but for
    what `joins_last` reads at each join)."""
    return engine._keyed_through and engine.kv.enable_prefix_caching and _vllm_admission(engine.scheduler)


def _vllm_admission(sched) -> bool:
    """Is the next `schedule`'s admission of a lone waiting request vLLM's own (`admit` with
    the prefix hits, `first_chunk`), with no adapters: `VLLMScheduler` (its queue in order), or
    a `KeyedScheduler` admitting joins (`admits_joins`: no per-step state a join skips, its
    `_admit` calling `admit` for the head, `join` as vLLM's), or `hygen` (`_admit_online`)?"""
    cls = type(sched)
    if not (isinstance(sched, VLLMSteps) and cls.admit is VLLMSteps.admit and cls.first_chunk is VLLMSteps.first_chunk):
        return False
    if isinstance(sched, VLLMScheduler):
        return (cls.schedule is VLLMScheduler.schedule and cls.arrivals_join is VLLMScheduler.arrivals_join
                and cls.join is VLLMScheduler.join and cls.before_join is VLLMScheduler.before_join
                and cls.joins_last is VLLMScheduler.joins_last and sched.lora is None)
    if isinstance(sched, HyGenScheduler):  # (online only: `joins_last`)
        return (cls.schedule is HyGenScheduler.schedule and cls._admit_online is HyGenScheduler._admit_online
                and cls._allocate_online is HyGenScheduler._allocate_online and cls._start is HyGenScheduler._start
                and cls.before_join is HyGenScheduler.before_join and cls.joins_last is HyGenScheduler.joins_last)
    return (isinstance(sched, KeyedScheduler) and cls.schedule is KeyedScheduler.schedule
            and cls._admit is KeyedScheduler._admit and cls.arrivals_join is KeyedScheduler.arrivals_join
            and cls.join is KeyedScheduler.join and cls.before_join is KeyedScheduler.before_join
            and cls.joins_last is KeyedScheduler.joins_last and sched.admits_joins())
