"""Sarathi-Serve (OSDI'24): chunked prefills with stall-free batching under a token budget.

Follows `sarathi/core/scheduler/sarathi_scheduler.py`. Each step, with `chunk_size` as the
per-step token budget τ (a decode counts one token):
1. every running request whose prompt is done decodes; when no block can be appended the
   latest-arrived running request not yet served this step is preempted by recompute (LIFO) and goes back to
   the front of the waiting queue (or the request itself, if it is the last one);
2. partially prefilled requests continue with `min(rest of prompt, budget left)` tokens;
3. new requests are admitted first come, first served while the budget lasts, sequence slots
   remain and their *whole* prompt fits in free blocks above the watermark (Sarathi allocates
   all prompt blocks at admission, unlike vLLM v1); each gets a chunk of the budget left.
Ongoing decodes are never paused by a prefill (no generation stalls); a long prompt is spread
over several steps (the engine fast-forwards a prompt's chunks beside the same decodes as one
event: `repeats_chunk`, `replica/chunk_stretch.py`; from the step where the previous prompt's
last chunk shares the budget with its first: `shares_chunk`, `replica/shared_chunk.py`, or with speculative
decoding `replica/spec_stretch.py`). Sarathi has no prefix cache: prompts are always computed in full.
`max_num_seqs` comes from the engine arguments (Sarathi's own default is 128).
"""

from __future__ import annotations

from pydantic import Field

from servesim.replica.schedulers import register
from servesim.replica.schedulers.arrival_joins import is_fresh, whole_prompts
from servesim.replica.schedulers.base import (
    NO_FAST_FORWARD, REPEAT_THROUGH, FastForward, Scheduler, SchedulerOutput, SchedulerParams,
)
from servesim.replica.schedulers.outputs import one_token_each
from servesim.replica.schedulers.queues import ARRIVAL_ID, ArrivalOrdered
from servesim.workload.request import Request, RequestState


class SarathiParams(SchedulerParams):
    chunk_size: int = Field(512, ge=1)
    """Token budget τ of one step (decodes + prefill chunks); pick the largest whose step
    time meets the TBT SLO (the paper uses 512 for strict and 2048 for relaxed SLOs)."""
    watermark: float = Field(0.01, ge=0.0, lt=1.0)
    """Fraction of GPU blocks kept free when admitting a new prompt (vLLM v0 block manager)."""


@register("sarathi")
class SarathiScheduler(ArrivalOrdered, Scheduler):
    Params = SarathiParams
    looks_up_prefixes = False  # (every prompt computed in full: `Scheduler.looks_up_prefixes`)

    def schedule(self, now_s: float) -> SchedulerOutput:
        out = SchedulerOutput()
        # 1) decodes in arrival order (all of them: each costs one token of the budget)
        kept, prefilling = self._decodes(out)
        budget = self.params.chunk_size - len(kept)
        out.num_known_decodes = len(kept)  # (the decodes lead `scheduled`)
        out.known_decodes = kept[:]  # (`kept` goes on to hold the prompts and the admitted)
        # 2) partially prefilled requests (their blocks were allocated at admission)
        for req in prefilling:
            kept.append(req)
            n = budget if budget < (n := req.num_tokens - req.num_computed_tokens) else n
            if n > 0:
                self.kv.allocate_slots(req, n)
                out.scheduled.append((req, n))
                budget -= n
        self.running = kept
        self._appended = len(prefilling)  # (left after the decodes: placed at the next step, as the admitted)
        # 3) new requests, FCFS, whole prompt allocated at admission
        self._admit(out, budget)
        return out

    def _decodes(self, out: SchedulerOutput) -> tuple[list[Request], list[Request]]:
        """Schedule every running request that decodes, in arrival order; when a block cannot
        be appended, preempt the latest-arrived request not yet handled. (The decodes kept,
        the requests still in their prompts.)"""
        queue = self._arrival_order()
        prefilling: list[Request] = []
        kept: list[Request] = []
        scheduled = out.scheduled
        allocate, lead = self.kv.allocate_slots, self.kv.allocate_leading_decodes
        i, end = 0, len(queue)  # queue[i:end]: not handled yet (victims leave from the end)
        bulk = True  # try the bulk form (again after a prompt amid the decodes or a preemption)
        while i < end:
            if bulk:
                # The decodes from here to the first request that is not one or does not fit,
                # in one call: the same outcome as allocating each in order (the walk below),
                # also for requests with prefix keys: their copies of a cached context no
                # longer make the bulk registration fail (`PrefixIndex.plan_appends`).
                k = lead(queue[i:end])
                bulk = False  # (the next is not a decode, or does not fit: the walk's)
                if k:
                    taken = queue[i:i + k]
                    scheduled += one_token_each(taken)
                    kept.extend(taken)
                    i += k
                    continue
            req = queue[i]
            i += 1
            n_out = req.num_output_tokens
            if not (n_out and req.prompt_len + n_out - req.num_computed_tokens == 1):  # (`is_decoding`)
                prefilling.append(req)
                bulk = True  # (a recomputed prompt amid the decodes)
                continue
            while not allocate(req, 1):
                if i < end:
                    end -= 1
                    victim = queue[end]
                else:
                    victim = req
                self._preempt(out, victim)
                bulk = True  # (the victim's blocks may cover the decodes that follow)
                if victim is req:
                    break
            else:
                scheduled.append((req, 1))
                kept.append(req)
        return kept, prefilling

    def _admit(self, out: SchedulerOutput, budget: int) -> None:
        """Admit waiting requests first come, first served while the budget, the sequence
        slots and the free blocks above the watermark last, each with its whole prompt's
        blocks and a chunk of the budget left."""
        kv = self.kv
        watermark = int(self.params.watermark * kv.num_gpu_blocks)
        while self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            req = self.waiting.peek()
            if req in out.preempted:
                break
            need = kv.blocks_needed(req, req.num_tokens)
            if kv.num_free_blocks - need < watermark:
                break
            self.waiting.pop()
            kv.allocate_slots(req, req.num_tokens)
            self.running.append(req)
            self._appended += 1
            req.state = RequestState.RUNNING
            n = budget if budget < (n := req.num_tokens) else n
            out.scheduled.append((req, n))
            budget -= n

    def _preempt(self, out: SchedulerOutput, victim: Request) -> None:
        self.running.remove(victim)
        self.preempt(victim, out)

    def repeat_order(self, output: SchedulerOutput) -> list[Request]:
        # Decode steps run the running requests sorted by arrival, whatever their progress (a
        # recompute finished in step 0 may have been listed after later arrivals there).
        return sorted((r for r, _ in output.scheduled), key=ARRIVAL_ID)

    def fast_forward(self, output: SchedulerOutput) -> FastForward:
        # Every running request served and nothing waiting: prompts whose last chunk ran now
        # decode with the rest (a chunk that leaves a prompt unfinished is not repeated: the
        # engine checks), and a finish admits nobody.
        return REPEAT_THROUGH if self.nothing_pending(output) else NO_FAST_FORWARD

    def repeats_chunk(self, output: SchedulerOutput) -> bool:
        # Decodes, then one prompt whose chunk spends the rest of the budget and leaves it
        # unfinished: the next steps run the same decodes (blocks permitting), the budget they
        # leave goes to the same prompt again (the first in progress, in arrival order), and
        # with none left nobody is admitted. Its blocks and prefix keys were all taken at
        # admission, so its chunks allocate nothing.
        n = output.num_known_decodes
        scheduled = output.scheduled
        if len(scheduled) != n + 1 or output.preempted:
            return False
        req, chunk = scheduled[-1]
        return chunk == self.params.chunk_size - n and req.num_computed_tokens + chunk < req.num_tokens

    # A decode's finish in those steps frees a sequence slot and its blocks, and the next step's
    # budget goes to the prompt in progress: nothing is admitted or preempted until its last
    # chunk, so the finish may be processed late (`replica/chunk_through.py`).
    chunk_finishes_late = True
    # Its step 3 admits nothing while the prompt takes the whole budget, and its rest's step
    # leaves the rest to what waits then; after it every running request decodes and, with
    # nothing waiting, `fast_forward` answers `REPEAT_THROUGH` (`replica/chunk_rest.py`).
    rest_joins_decodes = True

    def shares_chunk(self, output: SchedulerOutput) -> int:
        # Decodes, a prompt's last chunk (emitting its first token) and the next prompt's first
        # chunk, the budget spent and the second left unfinished: from the next step the first
        # decodes with the rest (one token of the budget more) and the second, the first in
        # progress, takes what they leave until its last chunk; nobody is admitted meanwhile.
        n = output.num_known_decodes
        scheduled = output.scheduled
        if len(scheduled) != n + 2 or output.preempted:
            return 0
        (first, r), (second, c0) = scheduled[n:]
        chunk = self.params.chunk_size - n - 1
        if (first.num_output_tokens or first.num_computed_tokens + r != first.num_tokens or chunk <= 0
                or n + r + c0 != self.params.chunk_size or second.num_computed_tokens + c0 + chunk >= second.num_tokens):
            return 0
        return chunk

    def arrivals_join(self, num_running: int) -> list[tuple[Request, int]] | None:
        # Step 3 on a queue of newcomers, every running request decoding: FCFS, each admitted
        # with its whole prompt's blocks (above the watermark: `join_blocks`) and a chunk of the
        # `chunk_size` budget the decodes leave; only a prompt that chunk covers whole joins (a
        # longer one runs chunks beside the decodes, a chunk stretch).
        return whole_prompts(self.waiting, len(self.running), num_running, self.config.max_num_seqs,
                             self.params.chunk_size, lambda req, budget: min(req.num_tokens, budget))

    def arrival_chunk(self, num_running: int, spent: int = 0) -> tuple[Request, int] | None:
        # Step 3 with one newcomer whose prompt the budget the decodes (and `spent`: a prompt's
        # rest in step 2) leave does not cover: admitted with that budget as its first chunk, it
        # takes the whole budget in every step until its last chunk (step 2), and nothing else
        # waits to be admitted beside it.
        if self.num_waiting != 1 or len(self.running) >= self.config.max_num_seqs:
            return None
        req = self.waiting.peek()
        budget = self.params.chunk_size - num_running - spent
        if budget <= 0 or req.prompt_len <= budget or not is_fresh(req):
            return None
        return req, budget

    def join(self, joins: list[tuple[Request, int]], out: SchedulerOutput) -> None:
        for req, n in joins:
            self.waiting.pop()
            # its whole prompt's blocks, as admission takes them (`n` is less for a first chunk:
            # `arrival_chunk`); the engine checked the blocks and the watermark
            self.kv.allocate_slots(req, req.num_tokens)
            self.running.append(req)
            self._appended += 1
            req.state = RequestState.RUNNING
            out.scheduled.append((req, n))

    def join_blocks(self, joins: list[tuple[Request, int]]) -> tuple[int, int]:
        blocks, _ = super().join_blocks(joins)
        return blocks, int(self.params.watermark * self.kv.num_gpu_blocks)
