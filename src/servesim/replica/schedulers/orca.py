"""Orca (OSDI'22): iteration-level scheduling with full-length KV reservation, no preemption.

Orca's Algorithm 1 (as re-implemented in Sarathi-Serve's `OrcaScheduler`): every step all
running requests run (decodes, one token each); then waiting requests are admitted in arrival
order while the batch has fewer than `max_num_seqs` requests and the KV slots *reserved* for
every admitted request fit in the cache. A new request's whole prompt runs in its first
iteration, mixed with the decodes (selective batching; no token budget, no chunking). Because
each admitted request already holds KV for its whole reservation, nothing is ever preempted;
the head of the queue blocks the rest until enough reservations are released.

Reservation (the vLLM paper's Orca baselines): `max` reserves up to the request's
`max_tokens` (or `max_model_len`) — Orca(Max); `pow2` the next power of two of the true output
length — Orca(Pow2); `oracle` exactly the true output length — Orca(Oracle). Reservations are
paged blocks of the engine's block size held from admission to finish.
"""

from __future__ import annotations

from typing import Literal

from servesim.replica.schedulers import register
from servesim.replica.schedulers.arrival_joins import whole_prompts
from servesim.replica.schedulers.base import (
    NO_FAST_FORWARD, REPEAT_AFTER_PREFILL, REPEAT_THROUGH, FastForward, Scheduler, SchedulerOutput,
    SchedulerParams,
)
from servesim.workload.request import Request, RequestState


class OrcaParams(SchedulerParams):
    reservation: Literal["max", "pow2", "oracle"] = "max"
    """KV reserved per request at admission: `max` = prompt + `max_tokens` (else
    `max_model_len`), `pow2` = prompt + next power of two >= the true output length,
    `oracle` = prompt + the true output length (both clairvoyant)."""


@register("orca")
class OrcaScheduler(Scheduler):
    Params = OrcaParams
    looks_up_prefixes = False  # (every prompt computed in full: `Scheduler.looks_up_prefixes`)
    stable_decode_order = True  # (decodes in running order, whatever their progress)
    _head_blocked = False
    _blocked_head: Request | None = None  # the waiting head `_head_blocked` is about

    def reserved_tokens(self, req: Request) -> int:
        limit = self.config.max_model_len
        if self.params.reservation == "oracle":
            total = req.prompt_len + req.output_len
        elif self.params.reservation == "pow2":
            total = req.prompt_len + (1 << max(req.output_len - 1, 0).bit_length())
        else:
            total = req.prompt_len + req.max_tokens if req.max_tokens else limit
        # never less than needed, and no larger than the whole cache, which could never grant it
        # (as conditions, not `min` and `max`: a builtin's call costs about ten times the comparison)
        if limit < total:
            total = limit
        if (needed := req.prompt_len + req.output_len) > total:
            total = needed
        return cap if (cap := self.kv.num_gpu_blocks * self.kv.block_size) < total else total

    def transfer_tokens(self, req: Request, num_tokens: int) -> int:
        # (a request handed off or migrated here holds its whole reservation too, so that the
        # running pass below never runs out of blocks)
        return max(num_tokens, self.reserved_tokens(req))

    def schedule(self, now_s: float) -> SchedulerOutput:
        out = SchedulerOutput()
        for req in self.running:  # blocks were reserved at admission: this never fails
            n = req.num_tokens - req.num_computed_tokens
            if not self.kv.allocate_slots(req, n):
                raise AssertionError("orca: a reserved request ran out of KV blocks")
            out.scheduled.append((req, n))
        self._head_blocked = False
        while self.waiting and len(self.running) < self.config.max_num_seqs:
            req = self.waiting.peek()
            if not self.kv.allocate_slots(req, self.reserved_tokens(req)):
                self._head_blocked = True  # FCFS head-of-line: wait for a finish
                self._blocked_head = req
                break
            self.waiting.pop()
            self.running.append(req)
            req.state = RequestState.RUNNING
            out.scheduled.append((req, req.prompt_len))
        return out

    def idle(self) -> bool:
        # Nothing runs or waits (orca never swaps): `schedule` would only reset `_head_blocked`,
        # which is already off (a blocked head waits until a `schedule` admits it and resets it).
        return (not self.running and not self.waiting and not self._head_blocked
                and type(self).schedule is OrcaScheduler.schedule)

    def arrival_keeps_batch(self, req: Request | None) -> bool:
        # A newcomer queues behind a head that only a finish can admit (the stretch stops there).
        if not self.waiting:
            return False
        return len(self.running) >= self.config.max_num_seqs or (self._head_blocked
                                                                  and self.waiting.peek() is self._blocked_head)

    def arrivals_join(self, num_running: int) -> list[tuple[Request, int]] | None:
        # The admission loop on a queue of newcomers: in arrival order, each whole (no token
        # budget) with its reservation (`join_blocks`: the engine checks they fit), while
        # sequence slots remain (checked on the running list a stretch leaves stale: conservative).
        return whole_prompts(self.waiting, len(self.running), num_running, self.config.max_num_seqs, 1 << 62,
                             lambda req, budget: req.num_tokens)

    def join(self, joins: list[tuple[Request, int]], out: SchedulerOutput) -> None:
        self._head_blocked = False
        for req, n in joins:
            if not self.kv.allocate_slots(req, self.reserved_tokens(req)):
                raise AssertionError(f"request {req.id} could not join the stretch")
            self.waiting.pop()
            self.running.append(req)
            req.state = RequestState.RUNNING
            out.scheduled.append((req, n))

    def holds_blocked_head(self, joins: list[tuple[Request, int]], free_blocks: int) -> bool:
        # `schedule`'s admission loop at that boundary: the head's reservation does not fit
        # (blocks are counted as `allocate_slots` does), so it blocks and nobody is admitted.
        head = joins[0][0]
        if self.kv.blocks_needed(head, self.reserved_tokens(head)) <= free_blocks:
            return False
        self._head_blocked = True
        self._blocked_head = head
        return True

    def join_blocks(self, joins: list[tuple[Request, int]]) -> tuple[int, int]:
        return sum(self.kv.blocks_needed(req, self.reserved_tokens(req)) for req, _ in joins), 0

    def fast_forward(self, output: SchedulerOutput) -> FastForward:
        # Decodes never allocate (their blocks are reserved) and a prompt runs whole in its
        # first step, then decodes: only a finish can admit the head, and with nobody waiting
        # a finish admits nobody.
        if not self.waiting:
            return REPEAT_THROUGH
        if self._head_blocked or len(self.running) >= self.config.max_num_seqs:
            return REPEAT_AFTER_PREFILL
        return NO_FAST_FORWARD
