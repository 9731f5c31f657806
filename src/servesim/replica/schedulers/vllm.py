"""vLLM v1 scheduler (the default): one unified token budget per step.

Follows `vllm/v1/core/sched/scheduler.py`: running requests first, in admission order, each
given `min(remaining, budget)` tokens (chunked prefill; decodes get 1); on an allocation
failure the last admitted running request (FCFS) or the lowest-priority, latest one
(priority) is preempted by recompute and re-queued at the front of the waiting queue; then,
only if nothing was preempted, waiting requests are admitted with their prefix-cache hits
while `max_num_seqs`, the budget and free blocks allow (head-of-line blocking).

LoRA (`replica/lora.py`): a waiting request whose adapter is not ready on the GPU is skipped,
as vLLM skips it when its adapter would exceed `max_loras`; its adapter starts loading if a
slot is free, and the load's completion is a timer.
"""

from __future__ import annotations

from typing import Literal

from servesim.replica.schedulers import register
from servesim.replica.lora import LoRACache
from servesim.replica.schedulers.arrival_joins import admit_whole, whole_prompts
from servesim.replica.schedulers.base import (
    NO_FAST_FORWARD, REPEAT_AFTER_PREFILL, REPEAT_THROUGH, FastForward, Scheduler, SchedulerOutput, SchedulerParams,
)
from servesim.replica.schedulers.finish_admits import admits_of
from servesim.replica.schedulers.vllm_steps import VLLMSteps
from servesim.workload.request import Request


class VLLMParams(SchedulerParams):
    policy: Literal["fcfs", "priority"] = "fcfs"
    """Queue order: `fcfs`, or `priority` = (priority, arrival time), lower value first."""


@register("vllm")
class VLLMScheduler(VLLMSteps):
    Params = VLLMParams
    stable_decode_order = True  # (decodes in running order, whatever their progress; `continuum` inherits it)
    supports_lora = True
    _head_blocked_by_kv = False
    _blocked_head: Request | None = None  # the waiting head `_head_blocked_by_kv` is about
    _lora_blocked = False  # every waiting request was skipped for its adapter (or the head waits for KV)
    lora: LoRACache | None = None  # made when the first request naming an adapter arrives

    def add_request(self, req: Request, now_s: float) -> None:
        if req.lora is not None:
            if self.lora is None:
                self.lora = LoRACache(self.config, self.perf)
            self.lora.lookup(req)
        Scheduler.add_request(self, req, now_s)  # (not `super()`'s lookup: once per arrival)

    def next_timer_s(self) -> float:
        t = Scheduler.next_timer_s(self)  # (not `super()`'s lookup: asked at every stretch planned)
        return t if self.lora is None else min(t, self.lora.next_ready_s())

    def schedule(self, now_s: float) -> SchedulerOutput:
        budget = self.config.max_num_batched_tokens
        out = SchedulerOutput()
        if self.lora is not None:
            self.lora.advance(now_s)
        running = self.running
        if not running:  # (an idle replica's first step: the running pass has nothing to do)
            self._admit(out, budget, now_s)
            return out

        # 1) running requests, in admission order (the pass takes the leading decodes in one
        # call first: where everyone decodes and fits, each gets its one token in order)
        budget = self.schedule_running(out, budget)

        # 2) waiting requests, only if this step preempted nothing
        if not out.preempted:
            self._admit(out, budget, now_s)
        return out

    def idle(self) -> bool:
        # Nothing runs, waits or is swapped: `schedule` would only reset `_head_blocked_by_kv`,
        # which is read with a waiting head only. Not with adapters (each `schedule` advances
        # their loads), nor for a subclass scheduling otherwise (continuum expires its pins).
        return (not self.running and not self.waiting and not self.swapped and self.lora is None
                and type(self).schedule is VLLMScheduler.schedule)

    def pick_victim(self) -> Request:
        if self.params.policy == "priority":
            return max(self.running, key=lambda r: (r.priority, r.arrival_s))
        return self.running[-1]

    def _admit(self, out: SchedulerOutput, budget: int, now_s: float) -> None:
        if self.lora is not None:
            return self._admit_lora(out, budget, now_s)
        waiting = self.waiting
        max_num_seqs = self.config.max_num_seqs
        self._head_blocked_by_kv = False
        while waiting and budget > 0 and len(self.running) < max_num_seqs:
            req = waiting.peek()
            left = self.admit(req, budget, out)
            if left is None:
                # head-of-line blocking, as vLLM; without prefix keys the head's need is fixed
                # (or, with hits on its own preempted blocks, shrinks by at most one block per
                # block decodes take) while decodes only consume blocks, so it stays blocked
                # until something finishes
                self._head_blocked_by_kv = not req.kv_block_keys and self.first_chunk(req, 0, budget) > 0
                self._blocked_head = req
                break
            budget = left

    def _admit_lora(self, out: SchedulerOutput, budget: int, now_s: float) -> None:
        """`_admit` skipping the requests whose adapter is not ready (vLLM's skipped waiting
        requests keep their place in the queue)."""
        max_num_seqs = self.config.max_num_seqs
        lora, running = self.lora, self.running
        self._head_blocked_by_kv = False
        blocked = True  # no waiting request left that the next step could admit without an event
        # Once an adapter found no slot, none frees in this pass (admissions only add running
        # adapters and loads only start with a slot), so a later request whose adapter is not
        # on the GPU is skipped without `acquire`'s pass over the running requests: under a
        # long queue that pass, a waiting request a step, was nearly all of a run's time
        gpu, full = lora.gpu, False
        for req in list(self.waiting):
            if budget <= 0 or len(running) >= max_num_seqs:
                blocked = False
                break
            if (name := req.lora) is not None:
                if full and name not in gpu:
                    continue
                if not lora.acquire(req, now_s, (r.lora for r in running)):
                    full = name not in gpu  # (no slot: `acquire` started no load and changed nothing)
                    continue  # its adapter is loading (a timer) or needs a slot (a finish)
            left = self.admit(req, budget, out)
            if left is None:
                self._head_blocked_by_kv = not req.kv_block_keys and self.first_chunk(req, 0, budget) > 0
                blocked = self._head_blocked_by_kv
                break
            budget = left
        self._lora_blocked = blocked

    def arrival_keeps_batch(self, req: Request | None) -> bool:
        # Admission is head-of-line: a newcomer queued behind a head that cannot be admitted
        # until something finishes (max_num_seqs reached, or KV blocks that decode-only steps
        # only make scarcer) is never looked at, so its prefix hits cannot matter either.
        # Adapters are left out: an arrival may start a LoRA load (a timer).
        if self.lora is not None or (req is not None and req.lora is not None) or not self.waiting:
            return False
        if len(self.running) >= self.config.max_num_seqs:
            return True  # the admission loop does not run at all
        head = self.waiting.peek()
        if not (self._head_blocked_by_kv and head is self._blocked_head):
            return False
        # priority order: the newcomer must sort after the head (ties: after, by insertion)
        return self.params.policy == "fcfs" or (req is not None
                                                and (req.priority, req.arrival_s) >= (head.priority, head.arrival_s))

    def vllm_admission(self) -> bool:
        """Does the next `schedule` admit as this class's `_admit` does, in the queue's
        iteration order (no adapters)? A subclass scheduling otherwise (`continuum`) says when."""
        return type(self).schedule is VLLMScheduler.schedule and self.lora is None

    def arrivals_join(self, num_running: int) -> list[tuple[Request, int]] | None:
        # `_admit` on a queue of newcomers, in queue order (a priority queue iterates in its
        # order).
        if not self.vllm_admission():
            return None
        max_num_seqs, max_num_batched_tokens, _, _ = self.limits
        return whole_prompts(self.waiting, len(self.running), num_running, max_num_seqs,
                             max_num_batched_tokens, lambda req, budget: self.first_chunk(req, 0, budget))

    def join(self, joins: list[tuple[Request, int]], out: SchedulerOutput) -> None:
        self.before_join()
        admit_whole(self, joins, out)

    def before_join(self) -> None:
        """What `schedule` sets before its admission, set by a join admitting in its place
        (`join`; `replica/keyed_join.py`, which admits a next turn with the hits it found)."""
        self._head_blocked_by_kv = False

    def joins_last(self, req: Request, now_s: float) -> bool:
        """Would `req`, admitted into the stretch in flight, run after every running request in
        its later steps (`replica/keyed_join.py`)? Yes: running requests keep their admission order."""
        return True

    def finish_admission(self) -> bool:
        # FCFS admission only (a priority queue is iterated sorted); no adapters; no policy of
        # its own in `schedule` or `finish` (`continuum` pins at a finish)
        return (type(self).schedule is VLLMScheduler.schedule and type(self).finish is Scheduler.finish
                and self.lora is None and self.params.policy == "fcfs")

    def finish_admits(self, num_running: int, free_blocks: int) -> list[tuple[Request, int]] | None:
        # `_admit` from the budget the decodes leave, on the blocks free after their allocation
        if not self.finish_admission():
            return None
        found = admits_of(self, num_running, free_blocks, lambda req, budget: self.first_chunk(req, 0, budget),
                          chunk=True)  # (`schedule_running` gives a chunked prompt its rest first)
        return None if found is None else found[0]

    def admit_at_finish(self, joins: list[tuple[Request, int]], out: SchedulerOutput) -> None:
        self.join(joins, out)
        if self.waiting:  # (`finish_admits` stopped at a head whose blocks are not free)
            self._head_blocked_by_kv = True
            self._blocked_head = self.waiting.peek()

    def repeats_chunk(self, output: SchedulerOutput) -> bool:
        # The running decodes, then the latest admitted prompt's chunk spending the whole
        # budget they leave and leaving it unfinished: the next running passes give the same
        # decodes their token and the prompt the same chunk (blocks permitting, which the
        # engine checks, allocating and registering its blocks as each step would), and the
        # admission loop never runs (no budget), whatever arrives. Only while `schedule` is
        # this class's (`vllm_admission`): not with adapters (their loads advance at each
        # `schedule`); `continuum` only while `plain` (no program call held: no pins, whose
        # expiries and releases its `schedule` does, and its `schedule` is vLLM's).
        return self.vllm_admission() and self.repeats_running_chunk(output, output.num_known_decodes)

    def fast_forward(self, output: SchedulerOutput) -> FastForward:
        # Same batch next step iff everyone running got its token, nothing was preempted and
        # the admission loop cannot admit: nothing waiting, max_num_seqs reached, or the head
        # waits for KV blocks that decode-only steps can only make scarcer.
        if (output.preempted or len(output.scheduled) != len(self.running)
                or (self.waiting and len(self.running) < self.config.max_num_seqs and not self._head_blocked_by_kv
                    and not (self.lora is not None and self._lora_blocked))):
            return NO_FAST_FORWARD
        # a finish only frees blocks and a sequence slot; with nobody waiting nothing is admitted
        if not self.waiting and type(self).finish is Scheduler.finish:
            return REPEAT_THROUGH
        return REPEAT_AFTER_PREFILL  # a prompt completed now just decodes with the rest
