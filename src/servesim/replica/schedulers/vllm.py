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
from servesim.replica.schedulers.base import Scheduler, SchedulerOutput, SchedulerParams
from servesim.workload.request import Request


class VLLMParams(SchedulerParams):
    policy: Literal["fcfs", "priority"] = "fcfs"
    """Queue order: `fcfs`, or `priority` = (priority, arrival time), lower value first."""


@register("vllm")
class VLLMScheduler(Scheduler):
    Params = VLLMParams
    _head_blocked_by_kv = False
    steady_after_prefill = True  # after a prompt completes, its request just decodes with the rest

    def schedule(self, now_s: float) -> SchedulerOutput:
        cfg = self.config
        kv = self.kv
        threshold = cfg.long_prefill_token_threshold
        max_len = cfg.max_model_len
        budget = cfg.max_num_batched_tokens
        out = SchedulerOutput()
        scheduled = out.scheduled
        running = self.running

        # 1) running requests, in admission order
        if running and len(running) <= budget and kv.allocate_decodes(running):
            # Fast path, same outcome as the loop below: everyone decodes and every block
            # fits, so each running request gets its one token in order.
            out.scheduled = [(req, 1) for req in running]
            out.num_known_decodes = len(running)
            self._admit(out, budget - len(running))
            return out
        i = 0
        allocate = kv.allocate_slots
        while i < len(running) and budget > 0:
            req = running[i]
            computed = req.num_computed_tokens
            n = req.prompt_len + req.num_output_tokens - computed  # this hot loop avoids properties
            if 0 < threshold < n:
                n = threshold
            if n > budget:
                n = budget
            if n > max_len - 1 - computed:
                n = max_len - 1 - computed
            if n <= 0:
                i += 1
                continue
            allocated = True
            while not allocate(req, n):
                if self._reclaim(req):
                    continue
                victim = self._pick_victim()
                if getattr(self.params, "policy", "fcfs") == "priority":
                    for j, (other, m) in enumerate(scheduled):
                        if other is victim:  # refund the tokens it was given this step
                            del scheduled[j]
                            budget += m
                            i -= 1
                            break
                running.remove(victim)
                self.preempt(victim, out)
                if victim is req:
                    allocated = False
                    break
            if not allocated:
                break
            scheduled.append((req, n))
            budget -= n
            i += 1

        # 2) waiting requests, only if this step preempted nothing
        if not out.preempted:
            self._admit(out, budget)
        return out

    def _reclaim(self, req: Request) -> bool:
        """Free KV without preempting a running request (a policy's pins); True if it did."""
        return False

    def _pick_victim(self) -> Request:
        if getattr(self.params, "policy", "fcfs") == "priority":
            return max(self.running, key=lambda r: (r.priority, r.arrival_s))
        return self.running[-1]

    def _admit(self, out: SchedulerOutput, budget: int) -> None:
        cfg = self.config
        kv = self.kv
        waiting = self.waiting
        threshold = cfg.long_prefill_token_threshold
        self._head_blocked_by_kv = False
        while waiting and budget > 0:
            if len(self.running) >= cfg.max_num_seqs:
                break
            req = waiting.peek()
            hits = kv.get_computed_blocks(req)
            num_cached = len(hits) * kv.block_size
            n = req.num_tokens - num_cached
            if 0 < threshold < n:
                n = threshold
            if not cfg.enable_chunked_prefill and n > budget:
                break
            n = min(n, budget)
            if not kv.allocate_slots(req, n, hits):
                # head-of-line blocking, as vLLM; without prefix keys the head's need is fixed
                # while decodes only consume blocks, so it stays blocked until something finishes
                self._head_blocked_by_kv = not req.kv_block_keys
                break
            waiting.pop()
            self.start(req, num_cached, n, out)
            budget -= n

    def steady_through_finishes(self) -> bool:
        # a finish only frees blocks and a sequence slot; with nobody waiting nothing is admitted
        return not self.waiting and type(self).finish is Scheduler.finish

    def is_steady(self, output: SchedulerOutput) -> bool:
        # Same batch next step iff everyone running got its token, nothing was preempted and
        # the admission loop cannot admit: nothing waiting, max_num_seqs reached, or the head
        # waits for KV blocks that decode-only steps can only make scarcer.
        return (
            not output.preempted
            and len(output.scheduled) == len(self.running)
            and (not self.waiting or len(self.running) >= self.config.max_num_seqs or self._head_blocked_by_kv)
        )
