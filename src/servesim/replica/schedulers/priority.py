"""Strict priority with preemption (vLLM `policy="priority"` plus proactive preemption).

Every step follows vLLM v1's unified token budget, with requests ordered by a key (here
`(priority, arrival)`, lower first):
1. running requests in key order get `min(remaining, budget)` tokens (decodes 1); when a block
   cannot be allocated the running request with the *largest* key is preempted (recompute, or
   swap to the CPU tier for policies that swap; swapped requests come back in key order
   with the waiting ones, nothing else being admitted in a step that preempted);
2. waiting requests are admitted in key order; when the head cannot get its blocks (or
   `max_num_seqs` is reached) and a running request has a larger key, that request is
   preempted to make room (vLLM v0's `_schedule_priority_preemption`: only as much as the
   head needs), its tokens this step refunded. A head that cannot be admitted blocks the rest.

`KeyedScheduler` is the shared machinery; `edf` and `autellix` only change the key.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from servesim.replica.schedulers import register
from servesim.replica.schedulers.base import Scheduler, SchedulerOutput, SchedulerParams
from servesim.replica.schedulers.queues import FCFSQueue
from servesim.workload.request import Request, RequestState


class SortedWaiting(FCFSQueue):
    """Waiting queue re-sorted by the scheduler's (possibly time-varying) key before each use;
    a preempted request re-enters by its key, not at the front."""

    __slots__ = ()

    def prepend(self, req: Request) -> None:
        self.append(req)

    def sort(self, key) -> None:
        self._q = deque(sorted(self._q, key=key))


class KeyedScheduler(Scheduler):
    """Unified-budget scheduler whose every choice follows `key(req)` (smaller = first)."""

    preempt_for_waiting: bool = True
    preemption_mode: str = "recompute"  # or "swap": victims go to the CPU tier when it has room

    def __init__(self, params, config, kv, perf) -> None:
        super().__init__(params, config, kv, perf)
        self.waiting = SortedWaiting()
        self.now_s = 0.0

    def key(self, req: Request) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def preempt_key(self, req: Request) -> Any:
        """What a waiting request must beat to preempt a running one (default: the key)."""
        return self.key(req)

    def begin_step(self, now_s: float) -> None:
        """Update time-varying state before the keys are read (subclass hook)."""

    def schedule(self, now_s: float) -> SchedulerOutput:
        self.now_s = now_s
        self.begin_step(now_s)
        key = self.key
        self.running.sort(key=key)
        self.waiting.sort(key=key)
        out = SchedulerOutput()
        budget = self._schedule_running(out, self.config.max_num_batched_tokens)
        if not out.preempted and not out.swapped_out:
            self._admit(out, budget)
        return out

    # ------------------------------------------------------------------ running
    def _tokens_for(self, req: Request, budget: int) -> int:
        n = req.num_tokens - req.num_computed_tokens
        threshold = self.config.long_prefill_token_threshold
        if 0 < threshold < n:
            n = threshold
        return min(n, budget, self.config.max_model_len - 1 - req.num_computed_tokens)

    def _schedule_running(self, out: SchedulerOutput, budget: int) -> int:
        running = self.running
        i = 0
        while i < len(running) and budget > 0:
            req = running[i]
            n = self._tokens_for(req, budget)
            if n <= 0:
                i += 1
                continue
            while not self.kv.allocate_slots(req, n):
                victim = running[-1]  # sorted: the largest key
                budget += self._evict(out, victim)
                if victim is req:
                    break
            else:
                out.scheduled.append((req, n))
                budget -= n
                i += 1
                continue
            break
        return budget

    def _evict(self, out: SchedulerOutput, victim: Request) -> int:
        """Preempt `victim` (swap if this policy swaps and the CPU tier has room, else
        recompute); return the tokens it had been given this step."""
        refund = 0
        for j, (other, m) in enumerate(out.scheduled):
            if other is victim:
                del out.scheduled[j]
                refund = m
                break
        self.running.remove(victim)
        if self.preemption_mode == "swap" and self.swap_out(victim, out):
            self.swapped.append(victim)
        else:
            self.preempt(victim, out)
        return refund

    # ------------------------------------------------------------------ waiting and swapped
    def _admit(self, out: SchedulerOutput, budget: int) -> None:
        """Admit waiting (and swap in swapped) requests in key order; a head that cannot get
        room, even by preempting requests with a larger preemption key, blocks the rest."""
        cfg = self.config
        kv = self.kv
        cands = sorted([*self.waiting, *self.swapped], key=self.key) if self.swapped else list(self.waiting)
        for req in cands:
            if budget <= 0 or req in out.preempted or req in out.swapped_out:
                break  # a request preempted this very step does not come straight back
            if req.state == RequestState.SWAPPED:
                need = kv.num_cpu_blocks_of(req.id) + 1  # its blocks + one for the next token
                while len(self.running) >= cfg.max_num_seqs or kv.num_free_blocks < need:
                    if not self._can_preempt_for(req):
                        return
                    budget += self._evict(out, self._worst())
                self.swapped.remove(req)
                self.swap_in(req, out)
                self.running.append(req)
                n = self._tokens_for(req, budget)
                if n > 0 and kv.allocate_slots(req, n):
                    out.scheduled.append((req, n))
                    budget -= n
                continue
            hits = kv.get_computed_blocks(req)
            num_cached = len(hits) * kv.block_size
            n = self._first_chunk(req, num_cached, budget)
            if not cfg.enable_chunked_prefill and req.num_tokens - num_cached > budget:
                break
            while len(self.running) >= cfg.max_num_seqs or not kv.allocate_slots(req, n, hits):
                if not self._can_preempt_for(req):
                    return  # head-of-line blocking
                budget += self._evict(out, self._worst())
                hits = kv.get_computed_blocks(req)  # a victim's freed blocks may now be hits
                num_cached = len(hits) * kv.block_size
                n = self._first_chunk(req, num_cached, budget)
            self.waiting.remove(req)
            self.start(req, num_cached, n, out)
            budget -= n

    def _first_chunk(self, req: Request, num_cached: int, budget: int) -> int:
        n = min(req.num_tokens - num_cached, budget)
        threshold = self.config.long_prefill_token_threshold
        return threshold if 0 < threshold < n else n

    def _worst(self) -> Request:
        return max(self.running, key=self.key)

    def _can_preempt_for(self, req: Request) -> bool:
        victim = self._worst() if self.running else None
        return (self.preempt_for_waiting and victim is not None
                and self.preempt_key(victim) > self.preempt_key(req))

    def is_steady(self, output: SchedulerOutput) -> bool:
        # With nothing waiting, no preemption and everyone decoding, the next step is the same.
        return (not output.preempted and not output.swapped_out and not output.swapped_in
                and not self.waiting and not self.swapped and len(output.scheduled) == len(self.running))


class PriorityParams(SchedulerParams):
    preemption: bool = True
    """Preempt lower-priority running requests (recompute) when a higher-priority waiting
    request cannot get blocks or a sequence slot. False = vLLM v1 `priority` (no proactive
    preemption; lower-priority requests are only preempted when an allocation fails)."""


@register("priority")
class PriorityScheduler(KeyedScheduler):
    """Strict priority: `(priority, arrival)` order, lower value first, with preemption."""

    Params = PriorityParams

    def __init__(self, params, config, kv, perf) -> None:
        super().__init__(params, config, kv, perf)
        self.preempt_for_waiting = params.preemption

    def key(self, req: Request) -> tuple:
        return (req.priority, req.arrival_s, req.id)
