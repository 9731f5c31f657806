"""vLLM v1 scheduler (the default): one unified token budget per step.

Follows `vllm/v1/core/sched/scheduler.py`: running requests first, in admission order, each
given `min(remaining, budget)` tokens (chunked prefill; decodes get 1); on an allocation
failure the last admitted running request (FCFS) or the lowest-priority, latest one
(priority) is preempted by recompute and re-queued at the front of the waiting queue; then,
only if nothing was preempted, waiting requests are admitted with their prefix-cache hits
while `max_num_seqs`, the budget and free blocks allow (head-of-line blocking).
"""

from __future__ import annotations

from typing import Literal

from servesim.replica.schedulers import register
from servesim.replica.schedulers.base import NO_FAST_FORWARD, FastForward, Scheduler, SchedulerOutput, SchedulerParams
from servesim.replica.schedulers.vllm_steps import VLLMSteps
from servesim.workload.request import Request

# After a prompt completes its request just decodes with the rest, so prefill steps may repeat.
_REPEAT = FastForward(repeat=True, after_prefill=True)
_REPEAT_THROUGH = FastForward(repeat=True, after_prefill=True, through_finishes=True)


class VLLMParams(SchedulerParams):
    policy: Literal["fcfs", "priority"] = "fcfs"
    """Queue order: `fcfs`, or `priority` = (priority, arrival time), lower value first."""


@register("vllm")
class VLLMScheduler(VLLMSteps):
    Params = VLLMParams
    _head_blocked_by_kv = False

    def schedule(self, now_s: float) -> SchedulerOutput:
        budget = self.config.max_num_batched_tokens
        out = SchedulerOutput()
        running = self.running

        # 1) running requests, in admission order
        if running and len(running) <= budget and self.kv.allocate_decodes(running):
            # Fast path, same outcome as the running pass: everyone decodes and every block
            # fits, so each running request gets its one token in order.
            out.scheduled = [(req, 1) for req in running]
            out.num_known_decodes = len(running)
            self._admit(out, budget - len(running))
            return out
        budget = self.schedule_running(out, budget)

        # 2) waiting requests, only if this step preempted nothing
        if not out.preempted:
            self._admit(out, budget)
        return out

    def pick_victim(self) -> Request:
        if self.params.policy == "priority":
            return max(self.running, key=lambda r: (r.priority, r.arrival_s))
        return self.running[-1]

    def _admit(self, out: SchedulerOutput, budget: int) -> None:
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
                break
            budget = left

    def fast_forward(self, output: SchedulerOutput) -> FastForward:
        # Same batch next step iff everyone running got its token, nothing was preempted and
        # the admission loop cannot admit: nothing waiting, max_num_seqs reached, or the head
        # waits for KV blocks that decode-only steps can only make scarcer.
        if (output.preempted or len(output.scheduled) != len(self.running)
                or (self.waiting and len(self.running) < self.config.max_num_seqs and not self._head_blocked_by_kv)):
            return NO_FAST_FORWARD
        # a finish only frees blocks and a sequence slot; with nobody waiting nothing is admitted
        if not self.waiting and type(self).finish is Scheduler.finish:
            return _REPEAT_THROUGH
        return _REPEAT
