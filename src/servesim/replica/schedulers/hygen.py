"""HyGen (Sun, Wang, Lai; NeurIPS'25): online requests first, offline work fills each step.

Online requests (`is_offline` false) are scheduled as in a chunked-prefill engine with the
unified token budget `max_num_batched_tokens`: running online requests, then waiting online
requests first come, first served (with prefix-cache hits). When memory is short, running
*offline* requests are preempted (recompute) before any online one. Then offline work is added
while the step's *predicted* time stays within `latency_budget_s` (the per-step budget HyGen's
SLO-aware profiler derives from the online TBT/TTFT SLOs):
1. decodes of running offline requests, in admission order, as many as fit the budget;
2. prefill chunks of offline requests (partially prefilled ones first, then waiting ones in
   the offline order), each the largest chunk whose predicted step time fits.
The predictor is the simulation's own step-time model (HyGen fits a linear model to profiled
batches; using the ground truth models a perfect predictor). Offline order `prefix` sorts the
offline queue by prefix keys, which is the depth-first order of their prefix tree, so requests
sharing a prefix run together and hit the cache; `offline_max_wait_s` moves offline requests
that waited that long to the front of the offline queue (anti-starvation).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from servesim.replica.schedulers import register
from servesim.replica.schedulers.arrival_joins import whole_prompts
from servesim.replica.schedulers.base import (
    NO_FAST_FORWARD, REPEAT_AFTER_PREFILL, REPEAT_THROUGH, FastForward, SchedulerOutput, SchedulerParams,
)
from servesim.replica.schedulers.finish_admits import admits_of
from servesim.replica.schedulers.outputs import append_decodes, one_token_each
from servesim.replica.schedulers.vllm_steps import VLLMSteps
from servesim.workload.request import Request, RequestState


class HyGenParams(SchedulerParams):
    latency_budget_s: float = Field(0.05, gt=0)
    """Predicted step time up to which offline work is added (from the online SLO)."""
    offline_order: Literal["fcfs", "prefix"] = "prefix"
    """Offline queue order: arrival, or prefix-tree (depth-first) order for prefix sharing."""
    offline_max_wait_s: float | None = Field(None, gt=0)
    """Offline requests waiting longer than this go first among offline work (None: off)."""


@register("hygen")
class HyGenScheduler(VLLMSteps):
    Params = HyGenParams
    stable_decode_order = True  # (online decodes in running order; it repeats only with no offline work)
    sorts_by_keys = True  # (offline_order "prefix" sorts the offline queue by the keys themselves)

    def __init__(self, params, config, kv, perf) -> None:
        super().__init__(params, config, kv, perf)
        self.offline: list[Request] = []  # offline waiting queue (online ones use `waiting`)
        self._online_only = False  # the last `schedule` found no offline request, running or waiting
        self._head_blocked = False  # ... and a waiting head that only a finish can let in
        self._blocked_head: Request | None = None

    # ------------------------------------------------------------------ queues
    def add_request(self, req: Request, now_s: float) -> None:
        if req.is_offline:
            self.offline.append(req)
        else:
            self.waiting.append(req)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting) + len(self.offline)

    def queues(self) -> tuple:
        return (*super().queues(), self.offline)

    def waiting_head(self) -> Request:
        # online requests first; else the offline queue's front, in the order its last
        # `schedule` left it (a fresh one goes at its end)
        return self.waiting.peek() if self.waiting else self.offline[0]

    def preempt(self, req: Request, out: SchedulerOutput) -> None:
        super().preempt(req, out)
        if req.is_offline:
            self.waiting.remove(req)
            self.offline.insert(0, req)

    # ------------------------------------------------------------------ the decision
    def schedule(self, now_s: float) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.config.max_num_batched_tokens
        online = [r for r in self.running if not r.is_offline]
        self._online_only = len(online) == len(self.running) and not self.offline
        self._head_blocked = False
        lead = self.kv.allocate_leading_decodes
        i = 0
        if online and (i := lead(online if len(online) <= budget else online[:budget])):
            # The leading online requests that decode and fit: the loop below would give each
            # its one token in order, evicting nobody (`allocate_leading_decodes` is its bulk
            # form); the loop goes on from the first one left (under overload the batch's
            # chunked prompt, last, or a decode without a free block).
            out.known_decodes = known = online[:i]
            out.scheduled = one_token_each(known)
            out.num_known_decodes = i
            budget -= i
        scheduled = out.scheduled  # (`evict` edits it in place)
        while i < len(online) and budget > 0:  # 1) running online requests
            req = online[i]
            i += 1
            if req.state != RequestState.RUNNING:
                continue  # preempted earlier in this loop to make room
            n = min(req.num_tokens - req.num_computed_tokens, budget)
            if n <= 0:
                continue
            evicted = len(out.preempted)
            if not self._allocate_online(out, req, n):
                break
            scheduled.append((req, n))
            budget -= n
            if (n != 1 or len(out.preempted) != evicted) and i < len(online) and budget > 0:
                # After a prompt chunk or an eviction (the victim's blocks usually cover many
                # of the decodes after `req` under overload: at azure-conv-10x, 1 replica, 130
                # a time) the decodes that follow in one call, as above: the same outcome as
                # allocating each in order up to the first that is not a decode or does not
                # fit. (The victims, taken from the end, are not decodes any more: recomputed.)
                k = lead(online[i:i + budget])
                if k:
                    append_decodes(out, online[i:i + k])  # (a run the engine takes without its test)
                    budget -= k
                    i += k
        if not any(r for r in out.preempted if not r.is_offline):
            budget = self._admit_online(out, budget)
        if not self._online_only:
            self._fill_offline(out, budget, now_s)
        return out

    def _allocate_online(self, out: SchedulerOutput, req: Request, n: int, hits=(), admit: bool = False) -> bool:
        """Allocate for an online request, preempting offline requests first, then (for a
        running request only) the latest admitted online one, finally `req` itself."""
        while not self.kv.allocate_slots(req, n, hits):
            victims = [r for r in self.running if r.is_offline]
            if not victims and not admit:
                victims = [r for r in self.running if r is not req]
            if not victims and admit:
                return False
            victim = victims[-1] if victims else req
            self.evict(victim, out)  # (its tokens leave the batch; the budget is not refunded)
            if victim is req:
                return False
            hits = self.kv.get_computed_blocks(req) if hits else hits
        return True

    def _admit_online(self, out: SchedulerOutput, budget: int) -> int:
        # (a full batch also holds the head back until a finish: no admission runs at all)
        if self._online_only and self.waiting and len(self.running) >= self.config.max_num_seqs:
            self._head_blocked, self._blocked_head = True, self.waiting.peek()
        while self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            req = self.waiting.peek()
            if req in out.preempted:
                break
            hits = self.kv.get_computed_blocks(req)
            n = min(req.num_tokens - len(hits) * self.kv.block_size, budget)
            if not self._allocate_online(out, req, n, hits, admit=True):
                # Head-of-line: with no offline request to evict and no prefix keys, its need
                # is fixed and decode-only steps only take blocks: blocked until a finish.
                self._head_blocked = self._online_only and not req.kv_block_keys
                self._blocked_head = req
                break
            self._start(req, hits, out, n)
            self.waiting.pop()
            budget -= n
        return budget

    def _start(self, req: Request, hits, out: SchedulerOutput, n: int) -> None:
        self.start(req, len(hits) * self.kv.block_size, n, out)

    # ------------------------------------------------------------------ offline fill
    def _fill_offline(self, out: SchedulerOutput, budget: int, now_s: float) -> None:
        limit = self.params.latency_budget_s
        prefills = [(n, r.num_computed_tokens) for r, n in out.scheduled if not r.is_decoding]
        decodes = [r.num_computed_tokens for r, n in out.scheduled if r.is_decoding]
        predict = self.perf.step_time_s
        offline_running = [r for r in self.running if r.is_offline]
        # 1) offline decodes: the longest prefix of them that fits the time budget
        cands = [r for r in offline_running if r.is_decoding][:max(budget, 0)]
        lo, hi = 0, len(cands)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if predict(prefills, decodes + [r.num_computed_tokens for r in cands[:mid]]) <= limit:
                lo = mid
            else:
                hi = mid - 1
        pending = cands[:lo]
        done: set[int] = set()
        while pending:
            req = pending.pop(0)
            while not self.kv.allocate_slots(req, 1):  # memory short: the latest offline goes
                others = [r for r in self.running if r.is_offline and r is not req and r.id not in done]
                victim = others[-1] if others else req
                if victim in pending:
                    pending.remove(victim)
                self.evict(victim, out)
                if victim is req:
                    break
            else:
                out.scheduled.append((req, 1))
                done.add(req.id)
                decodes.append(req.num_computed_tokens)
                budget -= 1
                continue
            break
        offline_running = [r for r in self.running if r.is_offline]
        # 2) offline prefill chunks: running ones first, then the offline queue
        for req in [r for r in offline_running if not r.is_decoding] + self._offline_order(now_s):
            if budget <= 0:
                break
            if req.state != RequestState.RUNNING and len(self.running) >= self.config.max_num_seqs:
                break
            hits = self.kv.get_computed_blocks(req) if req.state != RequestState.RUNNING else []
            start = req.num_computed_tokens if req.state == RequestState.RUNNING else len(hits) * self.kv.block_size
            n = self._largest_chunk(prefills, decodes, start, min(req.num_tokens - start, budget))
            if n <= 0:
                break
            if req.state == RequestState.RUNNING:
                if not self.kv.allocate_slots(req, n):
                    break
                out.scheduled.append((req, n))
            else:
                if req in out.preempted or not self.kv.allocate_slots(req, n, hits):
                    break
                self.offline.remove(req)
                self._start(req, hits, out, n)
            prefills.append((n, start))
            budget -= n

    def _largest_chunk(self, prefills, decodes, ctx: int, most: int) -> int:
        predict = self.perf.step_time_s
        limit = self.params.latency_budget_s
        lo, hi = 0, most
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if predict(prefills + [(mid, ctx)], decodes) <= limit:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def _offline_order(self, now_s: float) -> list[Request]:
        queue = self.offline
        if self.params.offline_order == "prefix":
            queue.sort(key=lambda r: (r.kv_block_keys or (), r.arrival_s, r.id))
        else:
            queue.sort(key=lambda r: (r.arrival_s, r.id))
        wait = self.params.offline_max_wait_s
        if wait is not None:
            old = [r for r in queue if now_s - r.arrival_s >= wait]
            if old:
                queue[:] = old + [r for r in queue if now_s - r.arrival_s < wait]
        return list(queue)

    def arrivals_join(self, num_running: int) -> list[tuple[Request, int]] | None:
        # Online only (no offline request held): `_admit_online` takes the waiting requests in
        # queue order, each `min(prompt, budget)` tokens with its hits; a fresh one that fits
        # whole never evicts (nobody offline), so this is vLLM's admission without the chunk cap.
        if self.offline:  # (offline requests wait there, never in `waiting`)
            return None
        cfg = self.config
        return whole_prompts(self.waiting, len(self.running), num_running, cfg.max_num_seqs,
                             cfg.max_num_batched_tokens, lambda req, budget: min(req.num_tokens, budget))

    def join(self, joins: list[tuple[Request, int]], out: SchedulerOutput) -> None:
        self.before_join()
        for req, n in joins:
            hits = self.kv.get_computed_blocks(req)  # (none: a fresh request)
            if not self._allocate_online(out, req, n, hits, admit=True):
                raise AssertionError(f"request {req.id} could not join the stretch")
            self._start(req, hits, out, n)
            self.waiting.pop()

    def before_join(self) -> None:
        """What `schedule` sets before its admission, set by a join admitting in its place
        (`join`; `replica/keyed_join.py`)."""
        self._online_only, self._head_blocked = True, False  # (as `schedule` leaves them)

    def joins_last(self, req: Request, now_s: float) -> bool:
        """Would `req`, admitted into the stretch in flight, run after every running request in
        its later steps (`replica/keyed_join.py`)? Online only (`arrivals_join`'s condition):
        running requests keep their admission order, and `_admit_online` of a lone waiting
        request that fits is vLLM's `admit` without the long-prompt cap."""
        return not self.offline

    def finish_admission(self) -> bool:
        # online only: `_admit_online` is vLLM's admission in queue order (no offline fill)
        return type(self).schedule is HyGenScheduler.schedule and self._online_only and not self.offline

    def finish_admits(self, num_running: int, free_blocks: int) -> list[tuple[Request, int]] | None:
        if not self.finish_admission():
            return None
        found = admits_of(self, num_running, free_blocks, lambda req, budget: min(req.num_tokens, budget),
                          chunk=True)  # (its online pass gives a chunked prompt its rest first)
        return None if found is None else found[0]

    def admit_at_finish(self, joins: list[tuple[Request, int]], out: SchedulerOutput) -> None:
        self.join(joins, out)
        if self.waiting:  # (`finish_admits` stopped at a head whose blocks are not free)
            self._head_blocked, self._blocked_head = True, self.waiting.peek()

    def repeats_chunk(self, output: SchedulerOutput) -> bool:
        # Online only (nobody offline running or waiting): the online running pass in running
        # order is vLLM's (`repeats_running_chunk`; its decodes are counted from the spent
        # budget, as this pass gives no known-decode prefix), and the admission never runs on a
        # spent budget. An offline arrival inside the stretch would only make `schedule` try
        # the offline fill, which takes nothing on a spent budget (its queue sort is redone by
        # every `schedule`), and the flags it leaves are reset before they are read.
        return (type(self).schedule is HyGenScheduler.schedule and self._online_only
                and self.repeats_running_chunk(output, len(output.scheduled) - 1))

    def fast_forward(self, output: SchedulerOutput) -> FastForward:
        # Offline decodes are limited by a predicted time that grows with context: not steady.
        # Online alone with nothing waiting: prompts done now decode with the rest, and a
        # finish admits nobody. With a waiting head blocked (as in `vllm`) the batch holds
        # until a finish; the head stays blocked after this step's prompts are done too.
        if self.nothing_pending(output) and not any(r.is_offline for r in self.running):
            return REPEAT_THROUGH
        if (self._head_blocked and self._online_only and not (output.preempted or self.swapped)
                and len(output.scheduled) == len(self.running) and self.waiting.peek() is self._blocked_head):
            return REPEAT_AFTER_PREFILL
        return NO_FAST_FORWARD

    def arrival_keeps_batch(self, req: Request | None) -> bool:
        # An online newcomer queues behind the blocked head and is never looked at; an offline
        # one would be tried by the offline fill (the next arrival, None, is guessed online).
        return ((req is None or not req.is_offline) and self._head_blocked and self._online_only
                and bool(self.waiting) and self.waiting.peek() is self._blocked_head)
