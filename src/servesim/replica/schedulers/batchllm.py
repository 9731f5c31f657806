"""BatchLLM (Zheng et al., MLSys'26): offline batches with global prefix sharing.

The whole waiting set is known (an offline batch), so the scheduler plans it globally:
1. *global prefix grouping*: over the prefix keys of every waiting request, each request joins
   the group of its deepest prefix block shared with another waiting request (a one-level
   flattening of the prefix tree; a request sharing nothing is its own group), so a shared
   prefix is computed once and stays referenced while its group runs, instead of depending on
   an LRU cache that may evict it between two distant users;
2. *decode-ratio ordering*: groups with a larger estimated output/prompt ratio go first, so
   their long decode phases overlap with the prefills of later groups; members of a group run
   in arrival order;
3. *memory-centric token batching*: running requests (decodes and unfinished prompts) first,
   then requests are admitted in plan order while the projected KV use — blocks held now, plus
   the growth every running request still needs for its estimated output, plus the newcomer's
   prompt and output — stays within `mem_threshold` of the cache. There is no fixed token
   budget per step unless `max_num_batched_tokens` is set here.
On an allocation failure (an estimate was short) the most recently admitted request is
preempted by recompute. The shared-prefix attention kernel of the paper is a perf-model
matter and is not modelled (each request's attention reads its whole context).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from itertools import chain
from operator import attrgetter
from typing import Literal, Sequence

from pydantic import Field

from servesim.replica.block_keys import BlockKeys
from servesim.replica.kv_cache import cdiv
from servesim.replica.schedulers import register
from servesim.replica.schedulers.arrival_joins import whole_prompts
from servesim.replica.schedulers.base import SchedulerOutput, SchedulerParams
from servesim.replica.schedulers.finish_admits import admits_until_blocked
from servesim.replica.schedulers.priority import KeyedScheduler
from servesim.replica.schedulers.queues import ARRIVAL_ID
from servesim.workload.request import Request

# Running requests are out of the plan: they go first, by arrival (the plan's "no group").
_ARRIVAL_S = attrgetter("arrival_s")


class BatchLLMParams(SchedulerParams):
    mem_threshold: float = Field(0.95, gt=0.0, le=1.0)
    """Fraction of KV blocks the projected use of admitted requests may reach."""
    output_len_estimate: Literal["oracle", "max_tokens"] = "oracle"
    """Output length used for ordering and memory projection: the true one (clairvoyant;
    offline jobs with known answer sizes) or `max_tokens` (else `max_model_len` - prompt)."""
    max_num_batched_tokens: int | None = Field(None, ge=1)
    """Optional token cap per step (None: memory-centric batching only)."""


def _runs(keys) -> Sequence:
    if not keys:
        return ()
    return keys.run_keys[:] if type(keys) is BlockKeys else keys


def _num_shared(rks: Sequence, count: Counter) -> int:
    """1 + the index of the last key counted twice or more (0: none). Chained keys make the
    shared ones a prefix, found by bisection; anything else falls back to a scan."""
    counts = list(map(count.__getitem__, rks))
    j = bisect_left(counts, True, key=(2).__gt__)
    if max(counts[j:], default=0) < 2:
        return j
    return max(i + 1 for i, c in enumerate(counts) if c >= 2)


@register("batchllm")
class BatchLLMScheduler(KeyedScheduler):
    Params = BatchLLMParams
    preempt_for_waiting = False

    def __init__(self, params, config, kv, perf) -> None:
        super().__init__(params, config, kv, perf)
        # Each waiting request's key: (its group's (-ratio, first arrival, smallest id), arrival,
        # id), the order of the plan's ranks. A request without prefix keys shares nothing, so
        # it is always its own group: its key is fixed when it enters the queue. Only the
        # requests with prefix keys are regrouped, when that part of the queue changed.
        self._plan: dict[Request, tuple] = {}
        self._keyed: dict[Request, None] = {}  # waiting requests with prefix keys (in entry order)
        self._keyed_dirty = False
        # The waiting queue stays sorted by plan key between steps (keys are unique: arrival and
        # id end them): a request joins at its place once its key is set, and the queue is
        # sorted again only after a replan or a keyed request's entry (no key yet).
        self.waiting.key = self._plan.__getitem__
        # ceil((prompt + output_len) / block_size) of each request run with the oracle estimate
        # (`_projected_use`), filled as requests first run, dropped when they leave
        self._final_blocks: dict[Request, int] = {}
        self._lookahead = config.num_speculative_tokens > 0
        # Its token budget per step is its own (`max_num_batched_tokens` of these params, none by
        # default), for the running pass and admission alike: the limits the engine's joins read
        self.limits = (config.max_num_seqs, params.max_num_batched_tokens or 1 << 60, *self.limits[2:])

    # ------------------------------------------------------------------ the plan
    def estimated_output(self, req: Request) -> int:
        if self.params.output_len_estimate == "oracle":
            return req.output_len
        return req.max_tokens or self.config.max_model_len - req.prompt_len

    def groups(self, reqs: list[Request]) -> dict[object, list[Request]]:
        """Requests by group: the deepest prefix key each shares with another request.

        Counted per key run (`block_keys.py`: every request holds a run whole, so a run's
        blocks share one count and its key stands for its last block)."""
        runs = [_runs(r.kv_block_keys) for r in reqs]
        count = Counter(chain.from_iterable(runs))
        groups: dict[object, list[Request]] = {}
        for r, rks in zip(reqs, runs):
            j = _num_shared(rks, count)
            groups.setdefault(rks[j - 1] if j else ("alone", r.id), []).append(r)
        return groups

    def _group_key(self, members: list[Request]) -> tuple:
        """(-estimated output/prompt ratio, first arrival, smallest id): groups in plan order."""
        ratio = sum(self.estimated_output(r) for r in members) / max(sum(r.prompt_len for r in members), 1)
        return (-ratio, min(r.arrival_s for r in members), min(r.id for r in members))

    def _replan_keyed(self) -> None:
        plan = self._plan
        keyed = list(self._keyed)
        # A lone request with prefix keys is its own group whatever its keys: no run keys are
        # built here (its lookup at admission builds them from its previous turn's, as vllm's).
        groups = self.groups(keyed).values() if len(keyed) > 1 else [keyed][:len(keyed)]
        for members in groups:
            g = self._group_key(members)
            for r in members:
                plan[r] = (*g, r.arrival_s, r.id)
        self._keyed_dirty = False
        self.waiting.clean = False

    def _own_key(self, req: Request) -> tuple:
        """The plan key of a request without prefix keys (its own group)."""
        return (*self._group_key([req]), req.arrival_s, req.id)

    def _enter(self, req: Request) -> None:
        if req.kv_block_keys:
            self._keyed[req] = None
            self._keyed_dirty = True
            self.waiting.clean = False  # (it joins the queue without a key until the replan)
        else:
            self._plan[req] = self._own_key(req)

    def _leave(self, req: Request) -> None:
        self._plan.pop(req, None)
        if req in self._keyed:
            del self._keyed[req]
            self._keyed_dirty = True

    def add_request(self, req: Request, now_s: float) -> None:
        self._enter(req)  # (its key first: the sorted queue places it by key)
        super().add_request(req, now_s)

    def preempt(self, req: Request, out: SchedulerOutput) -> None:
        self._enter(req)
        super().preempt(req, out)

    def forget(self, req: Request) -> None:
        super().forget(req)
        self._leave(req)  # (removed while waiting)
        self._final_blocks.pop(req, None)

    # Its own tables only (the stored keys, the plan and its keyed set, the final blocks; the
    # waiting queue is not read): a step's finishes leave `running` in one pass (`finish_all`).
    batch_free_forget = forget

    def key(self, req: Request) -> tuple:
        return self._plan.get(req, (float("-inf"), 0.0, -1, req.arrival_s, req.id))

    def begin_step(self, now_s: float) -> None:
        if self._keyed_dirty:
            self._replan_keyed()
        self._projected = self._projected_use()

    # ------------------------------------------------------------------ memory-centric batching
    def _growth(self, req: Request) -> int:
        held = self.kv.num_blocks_of(req.id)
        total = req.prompt_len + max(self.estimated_output(req), req.num_output_tokens + 1)
        return max(cdiv(total, self.kv.block_size) - held, 0)

    def _fixed_projection(self) -> bool:
        """Is each running request's projected use its final blocks (the oracle estimate, no
        lookahead slots)? Then decode steps leave the projection as it is (a request's growth
        is taken from its projected growth) and a finish lowers it by the request's final
        blocks."""
        return self.params.output_len_estimate == "oracle" and not self._lookahead

    def _final_of(self, req: Request) -> int:
        """A request's final blocks, its projected use under `_fixed_projection`."""
        return -(-(req.prompt_len + req.output_len) // self.kv.block_size)

    def _final_sum(self, running: list[Request]) -> int:
        """The final blocks (`_final_of`) of running requests, summed in C from the table
        (`_final_blocks`) that keeps each's from the first time it is asked for."""
        final_blocks = self._final_blocks
        try:
            return sum(map(final_blocks.__getitem__, running))
        except KeyError:  # (requests admitted since: theirs first)
            bs = self.kv.block_size
            for r in running:
                if r not in final_blocks:
                    final_blocks[r] = -(-(r.prompt_len + r.output_len) // bs)
            return sum(map(final_blocks.__getitem__, running))

    def _projected_use(self) -> int:
        """Blocks used now plus the growth every running request still needs (`_growth`,
        inlined: this runs over the running batch at every step)."""
        kv = self.kv
        bs = kv.block_size
        growth = 0
        if self.params.output_len_estimate == "oracle" and not self._lookahead:
            # A running request has generated fewer tokens than its output length (it would
            # have finished), so its projection is its final blocks, and it holds at most the
            # blocks of its tokens so far (no lookahead slots): every growth is >= 0 and the
            # sum of growths is the sum of final blocks less the sum of blocks held.
            running = self.running
            growth = self._final_sum(running) - sum(kv.num_blocks_list(running))
        elif self.params.output_len_estimate == "oracle":  # (`max` inlined too: hundreds of calls per step)
            running = self.running
            for r, h in zip(running, kv.num_blocks_list(running)):
                o, n = r.output_len, r.num_output_tokens + 1
                g = -(-(r.prompt_len + (o if o >= n else n)) // bs) - h
                if g > 0:
                    growth += g
        else:
            growth = sum(self._growth(r) for r in self.running)
        return kv.num_gpu_blocks - kv.num_free_blocks + growth

    def running_order_key(self):
        return ARRIVAL_ID

    def repeat_order(self, output: SchedulerOutput) -> list[Request]:
        return sorted((r for r, _ in output.scheduled), key=ARRIVAL_ID)  # (as `schedule` sorts `running`)

    def schedule(self, now_s: float) -> SchedulerOutput:
        self.now_s = now_s
        self.begin_step(now_s)
        self.running.sort(key=ARRIVAL_ID)  # (`key` of a request out of the plan)
        self.waiting.sort(key=self._plan.__getitem__)
        out = SchedulerOutput()
        budget = self.schedule_running(out, self.limits[1], self._swaps)
        if out.preempted:
            return out
        limit = self.params.mem_threshold * self.kv.num_gpu_blocks
        kv = self.kv
        self._head_blocked = self._head_blocked_by_kv = False
        while self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            req = self.waiting.peek()
            hits = kv.get_computed_blocks(req)
            n = min(req.num_tokens - len(hits) * kv.block_size, budget)
            total = req.prompt_len + self.estimated_output(req)
            held_after = cdiv(len(hits) * kv.block_size + n, kv.block_size)
            future = kv.blocks_needed(req, n, hits) + max(cdiv(total, kv.block_size) - held_after, 0)
            if (self.running and self._projected + future > limit) or not kv.allocate_slots(req, n, hits):
                # Head-of-line blocking. With a fixed projection (which decode steps keep), no
                # prefix keys and no replan pending (the plan order holds), the head's need is
                # fixed while decode steps only take blocks: it waits until a finish (`fast_forward`).
                self._head_blocked = self._head_blocked_by_kv = (
                    self._fixed_projection() and not req.kv_block_keys and not self._keyed_dirty)
                self._blocked_head = req
                break
            self._projected += future
            self._leave(self.waiting.pop())
            self.start(req, len(hits) * kv.block_size, n, out)
            budget -= n
        return out

    def arrival_keeps_batch(self, req: Request | None) -> bool:
        # A newcomer without prefix keys gets its plan key as it enters (its own group): one
        # sorting after a head that waits until a finish is never looked at (the next arrival,
        # None, is guessed to be one: `FastForwardHooks.arrival_keeps_batch`).
        if (req is not None and req.kv_block_keys) or not (self._head_blocked_by_kv and self.waiting):
            return False
        head = self.waiting.peek()
        return head is self._blocked_head and (req is None or self._own_key(req) > self._plan[head])

    def finish_admission(self) -> bool:
        # The projection drops by the final blocks of each request that finishes, and the
        # queue's plan order holds (no replan pending, kept sorted): a finish admits in that
        # order, each while the projection and the free blocks allow (`finish_admits`).
        return (type(self).schedule is BatchLLMScheduler.schedule and self._fixed_projection() and not self.swapped
                and not self._keyed_dirty and self.waiting.clean)

    def finish_departs(self, reqs: list[Request]) -> None:
        self._projected -= sum(map(self._final_of, reqs))  # (`schedule`'s, less theirs)

    def finish_admits(self, num_running: int, free_blocks: int) -> list[tuple[Request, int]] | None:
        # `schedule`'s admission loop on the projection after the finishes (`finish_departs`):
        # each fresh request's `future` is its final blocks. With nothing running the first
        # one skips the projection check: left to stepping.
        if not (num_running and self.finish_admission()):
            return None
        projected, limit = self._projected, self.params.mem_threshold * self.kv.num_gpu_blocks

        def over_limit(req: Request) -> bool:
            nonlocal projected
            projected += self._final_of(req)
            return projected > limit

        found = admits_until_blocked(self.waiting, len(self.running), num_running, self.config.max_num_seqs,
                                     self.limits[1], free_blocks, self.kv.block_size,
                                     lambda req, budget: min(req.num_tokens, budget), over_limit)
        return None if found is None else found[0]

    def admit_at_finish(self, joins: list[tuple[Request, int]], out: SchedulerOutput) -> None:
        self._projected += sum(self._final_of(req) for req, _ in joins)
        super().admit_at_finish(joins, out)

    def arrivals_join(self, num_running: int) -> list[tuple[Request, int]] | None:
        # The admission loop on a queue of newcomers, in plan order, each whole. With the
        # oracle estimate a running request's projected blocks (prompt + true output) never
        # change, and a finish removes its own: the projection on the stretch's stale state (a
        # stretch applies nothing before it ends) is at least stepping's, so a newcomer
        # admitted under it is admitted there too.
        if self.params.output_len_estimate != "oracle" or self.swapped or any(r.kv_block_keys for r in self.waiting):
            return None  # (a request with prefix keys is not fresh, and has no plan key before the replan)
        joins = whole_prompts(sorted(self.waiting, key=self._plan.__getitem__), len(self.running), num_running,
                              self.config.max_num_seqs, self.limits[1],
                              lambda req, budget: min(req.num_tokens, budget))
        if joins is None:
            return None
        kv = self.kv
        bs = kv.block_size
        # (`schedule`'s `future` of each fresh prompt, added to the projection: all positive, so
        # the last sum is the largest)
        future = sum([cdiv(req.prompt_len + req.output_len, bs) for req, _ in joins])
        limit = self.params.mem_threshold * kv.num_gpu_blocks
        used = kv.num_gpu_blocks - kv.num_free_blocks
        if self._fixed_projection() and used + self._final_sum(self.running) + future <= limit:
            return joins  # (the projection without the blocks held subtracted, at least it, is within the limit)
        return joins if self._projected_use() + future <= limit else None

    def join(self, joins: list[tuple[Request, int]], out: SchedulerOutput) -> None:
        self.waiting.sort(key=self._plan.__getitem__)  # (as `schedule`: the order `arrivals_join` used)
        for req, n in joins:
            hits = self.kv.get_computed_blocks(req)  # (none: a fresh request)
            if not self.kv.allocate_slots(req, n, hits):
                raise AssertionError(f"request {req.id} could not join the stretch")
            self._leave(self.waiting.pop())
            self.start(req, 0, n, out)

    # ------------------------------------------------------------------ a next turn joining a stretch
    # A next turn whose prompt this policy's token cap chunks (one set in these params) steps:
    # its rest comes in the running pass, which a join in chunks (`keyed_chunk_join.py`) would
    # have to show to be stepping's.
    max_join_chunks = 0

    def first_chunk(self, req: Request, num_cached: int, budget: int) -> int:
        # `schedule`'s admission: the rest of the prompt within the budget (no long-prefill cap
        # on the first chunk; chunked whatever `enable_chunked_prefill` says)
        return min(req.num_tokens - num_cached, budget)

    def joins_last(self, req: Request, now_s: float) -> bool:
        """Would the next `schedule`, at the step a stretch in flight is cut at (`req` the only
        waiting request, fresh or a conversation's next turn: `replica/keyed_join.py`), admit it
        whole with the hits it finds, and every later one run it after the running requests?

        - Its plan is its own group (the only waiting request), admitted if the projection
          (`_projected_use` at that step, plus its `future`) stays within `mem_threshold`. With
          the fixed projection the projection is the blocks in use plus each running request's
          final blocks less those it holds, and every block in use is held by a running request:
          it is at most their final blocks. Its `future` (the free blocks its allocation takes
          plus the growth to its final blocks) is at most its own final blocks. So the final
          blocks of every request the stretch lists (those that left before the step too) and
          its own within the threshold admit it there; a join refused on this bound steps.
        - Each `schedule` sorts `running` by arrival: one that arrived after every running
          request (ties refused) sorts last, where the join puts it.
        Its prompt whole beside the decodes (`first_chunk`; `keyed_join` checks), nothing
        swapped (a swap-in would come first)."""
        running = self.running
        if self.swapped or not running or not self._fixed_projection():
            return False
        if max(map(_ARRIVAL_S, running)) >= req.arrival_s:
            return False
        return self._final_sum(running) + self._final_of(req) <= self.params.mem_threshold * self.kv.num_gpu_blocks

    def keyed_joined(self, req: Request) -> None:
        # `schedule`'s `_leave` of the request it admits: its plan key and keyed entry dropped
        # (the replan flag set, as there). The projection it would raise is not kept: the next
        # `schedule` computes it afresh, and no plain stretch reads it (`finish_departs` and
        # `finish_admits` serve admission stretches, which hold a waiting head: no turn joins one).
        self._leave(req)
        # (its final blocks kept as `_projected_use` keeps a running request's: the next join's
        # bound sums the batch's in C rather than finding the newcomers in a Python loop)
        self._final_blocks[req] = self._final_of(req)
