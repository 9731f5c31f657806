"""vLLM v0 scheduler, default path (chunked prefill off): prefill-first.

Follows `vllm/core/scheduler.py` `_schedule_default` (v0.4-0.6), scheduling.md §1.2-1.3:
- if nothing is swapped out, admit waiting requests FCFS with their *whole* prompt (plus the
  tokens generated before a recompute preemption) while the blocks leave the watermark free
  (`can_allocate`), the token budget and `max_num_seqs` allow; the head blocks the rest;
- a step with prefills runs only prefills (prefill and decode never mix: generation stalls);
- otherwise every running request decodes, oldest arrival first; when a block cannot be
  appended the latest-arrived running request is preempted (by recompute: re-queued at the
  front of the waiting queue; or by swap to the CPU tier), itself if nothing else is left;
- swapped requests have priority over new ones and are swapped back in FIFO, only in a step
  that preempted nothing, while the watermark holds.

Deviations, each on purpose: block allocation counts exactly the blocks touched (block
manager v2); when the CPU tier is full a swap preemption falls back to recompute (vLLM raises
"lack of CPU swap space"); the `priority` policy and `delay_factor` are left out (the
`priority` scheduler covers strict priorities). The engine's `enable_chunked_prefill` is not
read: this is the chunked-prefill-off path (`sarathi` is the stall-free one).
"""

from __future__ import annotations

from collections import deque
from itertools import count
from typing import Literal

from pydantic import Field

from servesim.replica.kv_cache import cdiv
from servesim.replica.schedulers import register
from servesim.replica.schedulers.arrival_joins import whole_prompts
from servesim.replica.schedulers.base import (
    NO_FAST_FORWARD, REPEAT_AFTER_PREFILL, REPEAT_DECODES, REPEAT_THROUGH, FastForward, SchedulerOutput,
    SchedulerParams,
)
from servesim.replica.schedulers.finish_admits import admits_until_blocked
from servesim.replica.schedulers.outputs import one_token_each
from servesim.replica.schedulers.queues import ARRIVAL_ID, ArrivalOrdered
from servesim.replica.schedulers.vllm_steps import VLLMSteps
from servesim.workload.request import Request


def _whole_prompt(req: Request, budget: int) -> int:
    """v0's admission takes a prompt whole or not at all (`FirstChunk`)."""
    return req.num_tokens if req.num_tokens <= budget else 0


class VLLMV0Params(SchedulerParams):
    preemption_mode: Literal["recompute", "swap"] = "recompute"
    """vLLM v0 `--preemption-mode`; unset in vLLM means recompute for single-sequence requests."""
    watermark: float = Field(0.01, ge=0.0, lt=1.0)
    """Fraction of GPU blocks an admission or swap-in must leave free (BlockSpaceManager 0.01)."""
    max_num_seqs: int | None = Field(256, ge=1)
    """Most running requests (v0 default 256; None: the engine's `max_num_seqs`)."""
    max_num_batched_tokens: int | None = Field(None, ge=1)
    """Token budget of a prefill step. None: max(max_model_len, 2048), v0's default with
    chunked prefill off, so any prompt that fits the model fits one step."""


@register("vllm-v0")
class VLLMV0Scheduler(ArrivalOrdered, VLLMSteps):
    Params = VLLMV0Params

    @property
    def may_swap(self) -> bool:
        return self.params.preemption_mode == "swap"

    def __init__(self, params, config, kv, perf) -> None:
        super().__init__(params, config, kv, perf)
        self.max_num_seqs = params.max_num_seqs or config.max_num_seqs
        self.token_budget = params.max_num_batched_tokens or max(config.max_model_len, 2048)
        self.watermark_blocks = int(params.watermark * kv.num_gpu_blocks)
        self.swapped: deque[Request] = deque()  # type: ignore[assignment]
        self._blocked = False  # admission / swap-in stopped for a reason decodes cannot lift
        self._blocked_head: Request | None = None  # the waiting head that stopped admission
        self._blocked_by_budget = False  # ... by this step's prefill tokens: the next step may admit it

    def admission_error(self, req: Request) -> str | None:
        total = req.prompt_len + req.output_len
        if total > self.token_budget:
            return f"prompt + output = {total} tokens > the v0 token budget {self.token_budget}"
        if cdiv(total, self.kv.block_size) > self.kv.num_gpu_blocks - self.watermark_blocks:
            return "needs more KV blocks than the GPU has above the watermark"
        return None

    def schedule(self, now_s: float) -> SchedulerOutput:
        out = SchedulerOutput()
        self._blocked = self._blocked_by_budget = False
        if not self.swapped:
            self._schedule_prefills(out)
            if out.scheduled:
                return out
        self._schedule_running(out)
        if not out.preempted and not out.swapped_out:
            self._schedule_swapped(out)
        return out

    def _schedule_prefills(self, out: SchedulerOutput) -> None:
        kv = self.kv
        tokens = 0
        while self.waiting:
            req = self.waiting.peek()
            hits = kv.get_computed_blocks(req)
            num_cached = len(hits) * kv.block_size
            n = req.num_tokens - num_cached
            if kv.num_free_blocks - kv.blocks_needed(req, n, hits) < self.watermark_blocks:
                self._blocked = not req.kv_block_keys  # LATER: head-of-line blocking
                self._blocked_head = req
                break
            if tokens + n > self.token_budget or len(self.running) >= self.max_num_seqs:
                self._blocked = True
                self._blocked_by_budget = len(self.running) < self.max_num_seqs
                self._blocked_head = req
                break
            kv.allocate_slots(req, n, hits)
            self.waiting.pop()
            self.start(req, num_cached, n, out)
            tokens += n

    def _schedule_running(self, out: SchedulerOutput) -> None:
        # The queue is `order[i:end]`: a request is taken from its front, a victim from its end.
        # At the start and after each preemption the leading decodes that fit take their token
        # in one call (`allocate_leading_decodes`: the same as `allocate_slots(req, 1)` for
        # each in order up to the first that does not fit or is not a decode).
        order = self._arrival_order()
        i, end = 0, len(order)
        kv = self.kv
        allocate = kv.allocate_slots
        bulk = True
        while i < end:
            if bulk and (k := kv.allocate_leading_decodes(order[i:end])):
                i += k
                if i == end:
                    break
            req = order[i]
            i += 1
            bulk = False
            while not allocate(req, 1):
                bulk = True
                if i < end:
                    end -= 1
                    self._preempt(order[end], out)  # LIFO: the latest arrival
                else:
                    self._preempt(req, out)
                    req = None
                    break
            if req is None:
                order[i - 1] = None  # (preempted: not kept)
        kept = [r for r in order[:end] if r is not None]
        out.scheduled += one_token_each(kept)
        self.running = kept

    def _preempt(self, req: Request, out: SchedulerOutput) -> None:
        self.swap_or_recompute(req, out, self.params.preemption_mode == "swap")

    def _schedule_swapped(self, out: SchedulerOutput) -> None:
        while self.swapped:  # FIFO
            req = self.swapped[0]
            if self.swap_in_room(req) < self.watermark_blocks or len(self.running) >= self.max_num_seqs:
                self._blocked = True
                break
            self.resume(req, out, 1)

    def arrival_keeps_batch(self, req: Request | None) -> bool:
        # A newcomer joins the FCFS queue's tail: harmless while swapped requests (which come
        # first) cannot come back, or behind a head that admission stopped at, for a reason
        # decodes cannot lift (the stretch stops at a finish, which could lift it).
        return (self._blocked and not self._blocked_by_budget
                and bool(self.swapped or (self.waiting and self.waiting.peek() is self._blocked_head)))

    stalls_decodes = True  # (a step with prompts runs only prompts)

    def arrivals_join(self, num_running: int) -> list[tuple[Request, int]] | None:
        # `_schedule_prefills` on a queue of newcomers, nothing swapped: FCFS, each whole
        # within the prefill step's own budget and `max_num_seqs` (on `running`, which still
        # lists the stretch's departed requests: at least stepping's count), its blocks above
        # the watermark (`join_blocks`: the engine checks them)
        if self.swapped:
            return None
        return whole_prompts(self.waiting, len(self.running), 0, self.max_num_seqs, self.token_budget, _whole_prompt)

    def join(self, joins: list[tuple[Request, int]], out: SchedulerOutput) -> None:
        self._blocked = self._blocked_by_budget = False  # (as that `schedule` leaves them)
        for req, n in joins:
            self.kv.allocate_slots(req, n)  # (no prefix hit: `whole_prompts` took fresh requests only)
            self.waiting.pop()
            self.start(req, 0, n, out)

    def join_blocks(self, joins: list[tuple[Request, int]]) -> tuple[int, int]:
        blocks, _ = super().join_blocks(joins)
        return blocks, self.watermark_blocks

    def before_join(self) -> None:
        """What `schedule` leaves set when it admits, set by a join admitting in its place
        (`replica/keyed_join.py`, a next turn with the hits it found)."""
        self._blocked = self._blocked_by_budget = False

    def joins_last(self, req: Request, now_s: float) -> bool:
        """Would `_schedule_prefills` admit `req`, the only waiting request, at the stretch's
        next step as `replica/keyed_join.py` does (its prompt whole in a step of its own, the
        decodes stalled), and would it run after every running request in the later steps?
        Nothing swapped (swap-ins come first), a sequence slot (on `running`, which still lists
        the stretch's departed requests: at least stepping's count) and its tokens within the
        prefill step's budget (its blocks above the watermark: `join_blocks`, the engine checks
        them). It arrived last, so the running pass's arrival order puts it last."""
        return not self.swapped and len(self.running) < self.max_num_seqs and req.num_tokens <= self.token_budget

    def finish_admission(self) -> bool:
        # FCFS admission of whole prompts, nothing swapped (swap-ins come first); the admitting
        # step runs the prompts alone (`stalls_decodes`: a prompt-only step in the stretch)
        return not self.swapped

    def finish_admits(self, num_running: int, free_blocks: int) -> list[tuple[Request, int]] | None:
        # `_schedule_prefills` at a finish: FCFS, each whole within the prefill step's own budget,
        # its blocks leaving the watermark free (`free_blocks`: before the decodes' blocks of that
        # step, which it stalls), at most `max_num_seqs` running (`num_running`: those still
        # running, exact). A head stopped by the blocks or the sequence cap waits until the next
        # finish: decode steps free neither (the cap is checked after the blocks, as here; both
        # leave it waiting); one stopped by the budget would be admitted at the next step: None.
        if self.swapped:
            return None
        room = count(num_running - self.max_num_seqs)  # (asked once per request whose blocks fit)
        found = admits_until_blocked(self.waiting, 0, 0, self.max_num_seqs, self.token_budget,
                                     free_blocks - self.watermark_blocks, self.kv.block_size, _whole_prompt,
                                     over_limit=lambda req: next(room) >= 0)
        return None if found is None else found[0]

    def admit_at_finish(self, joins: list[tuple[Request, int]], out: SchedulerOutput) -> None:
        self.join(joins, out)
        if self.waiting:  # (`finish_admits` stopped at a head the blocks or the cap keep waiting)
            self._blocked = True
            self._blocked_head = self.waiting.peek()

    def repeat_order(self, output: SchedulerOutput) -> list[Request]:
        # Decode steps run the running requests sorted by arrival, whatever their progress (a
        # recompute finished in step 0 may have been listed after later arrivals there).
        return sorted((r for r, _ in output.scheduled), key=ARRIVAL_ID)

    def fast_forward(self, output: SchedulerOutput) -> FastForward:
        # Decode-only steps repeat while nothing is preempted or swapped and whatever waits
        # (new or swapped) is held back by blocks or sequences that decodes cannot free. A
        # prefill step repeats as decodes only if it ran every running request (no stalled
        # decodes) and did not stop at the budget (the next step's is whole again); with
        # nothing waiting a finish admits nobody.
        if (output.preempted or output.swapped_in or output.swapped_out or len(output.scheduled) != len(self.running)
                or ((self.waiting or self.swapped) and not self._blocked)):
            return NO_FAST_FORWARD
        if not (self.waiting or self.swapped):
            return REPEAT_THROUGH
        return REPEAT_DECODES if self._blocked_by_budget else REPEAT_AFTER_PREFILL
