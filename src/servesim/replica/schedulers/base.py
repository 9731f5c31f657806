"""The scheduler plug-in contract.

A scheduler owns the replica's queues and decides, once per engine step, which requests run
and with how many tokens. It allocates KV blocks through the engine's `KVCacheManager` while
it decides (as vLLM does), and may preempt. It never advances time or request progress: the
engine runs the step through the performance model and, at the step's end, advances
`num_computed_tokens`, emits tokens, calls `finish` for completed requests, then `end_step`.
The engine only calls methods: it never writes a scheduler's fields or touches its queues
(`add_request`, `schedule`, `fast_forward`, `repeats_chunk`, `swap_done`, `finish`, `end_step`,
`remove`, `drain`, `next_timer_s`, `admission_error`, and the read-only counts).

To add a policy: one file in this folder with a `Scheduler` subclass decorated with
`@register("name")` and a pydantic `Params` model whose fields carry the reference
implementation's names, defaults and docstrings. Nothing else needs editing. A policy built
on vLLM's mechanics subclasses `vllm_steps.VLLMSteps` and supplies only its order and victims.
What the decisions return (`SchedulerOutput`, `FastForward`) is defined in `outputs.py`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from servesim.replica.kv_cache import KVCacheManager, cdiv
from servesim.replica.schedulers.outputs import (
    NO_FAST_FORWARD, REPEAT_AFTER_PREFILL, REPEAT_DECODES, REPEAT_THROUGH, UNLIMITED_STEPS, FastForward,
    SchedulerOutput,
)
from servesim.replica.schedulers.queues import make_queue
from servesim.replica.swap import VLLM_V0_SWAP, SwapMechanics
from servesim.workload.request import Request, RequestState

if TYPE_CHECKING:
    from servesim.replica.config import EngineConfig

__all__ = ["NO_FAST_FORWARD", "REPEAT_AFTER_PREFILL", "REPEAT_DECODES", "REPEAT_THROUGH", "UNLIMITED_STEPS",
           "FastForward", "Scheduler", "SchedulerOutput", "SchedulerParams"]


class SchedulerParams(BaseModel):
    """Base of every scheduler's parameters (unknown keys are rejected)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Scheduler:
    """Base class: queues, bookkeeping helpers and the default hooks."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[SchedulerParams]] = SchedulerParams
    # How this policy's swaps are executed (copy granularity, sync or overlapped); the engine
    # prices `SchedulerOutput.swapped_out/in` with it. A policy may set it per instance.
    swap_mechanics: SwapMechanics = VLLM_V0_SWAP
    # Whether this policy serves requests that name a LoRA adapter (`replica/lora.py`); the
    # engine rejects such requests, with a reason, on policies that do not.
    supports_lora: ClassVar[bool] = False
    # Whether repeated steps list the requests in the order of the step they repeat. Speculative
    # decoding draws acceptances in batch order, so its steps fast-forward only when the order is
    # known (`repeat_order` reads this flag; a policy that re-sorts its batch overrides that).
    stable_decode_order: ClassVar[bool] = False
    # Whether taking a request in (`add_request`) reads what a finish changed (a program's
    # attained service, a tenant's held count). A closed-loop workload's follow-up may then
    # arrive before a finish inside a stretch is processed, so stretches stop at finishes.
    arrival_reads_finishes: ClassVar[bool] = False

    def __init__(self, params: SchedulerParams, config: EngineConfig, kv: KVCacheManager, perf: Any) -> None:
        self.params = params
        self.config = config
        self.kv = kv
        self.perf = perf  # a cost model policies may consult (predictions, swap times)
        self.waiting = make_queue(getattr(params, "policy", "fcfs"))
        self.running: list[Request] = []
        self.swapped: list[Request] = []  # KV in the CPU tier (swap policies)
        # Time at which an overlapped swap-in completes, by request id (the engine reports it
        # through `swap_done`; the request must not be scheduled before). Sync swaps never appear.
        self.swap_ready_s: dict[int, float] = {}
        # Engine steps run so far (recorded by `end_step`, so `schedule` sees the steps before
        # it; a fast-forwarded stretch of k decode steps advances it by k in one call).
        self.num_engine_steps = 0

    @classmethod
    def make_kv_cache(cls, num_gpu_blocks: int, block_size: int, enable_prefix_caching: bool,
                      num_cpu_blocks: int) -> KVCacheManager:
        """The KV cache this policy runs on (a policy with its own cache structure, such as a
        radix tree, returns a `KVCacheManager` subclass)."""
        from servesim.replica.kv_cache import KVCacheManager

        return KVCacheManager(num_gpu_blocks, block_size, enable_prefix_caching, num_cpu_blocks)

    # ---- the decision ------------------------------------------------------------
    def schedule(self, now_s: float) -> SchedulerOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def idle(self) -> bool:
        """True only if `schedule` would now schedule nothing and change nothing read later (the engine skips it)."""
        return False

    def fast_forward(self, output: SchedulerOutput) -> FastForward:
        """May the engine repeat the step `schedule` just returned, and how far (see
        `FastForward`)? Must not change any state."""
        return NO_FAST_FORWARD

    def repeat_order(self, output: SchedulerOutput) -> list[Request] | None:
        """The requests of `output.scheduled` in the order the steps that repeat it
        (`fast_forward`) list them, or None if that order may change from step to step.
        Speculative decoding draws acceptances in batch order, so the engine fast-forwards
        speculative steps only when this is known. The default: `scheduled`'s own order for a
        policy with `stable_decode_order`, else None; a policy that re-sorts its running
        requests by a key that decode steps cannot change returns them sorted by it."""
        return [r for r, _ in output.scheduled] if self.stable_decode_order else None

    def repeat_order_limit(self, output: SchedulerOutput) -> tuple[float, int]:
        """How long `repeat_order`'s answer holds, for a policy whose order follows progress at
        points it foresees: (time, steps) such that repeated steps starting before that time, at
        most that many (step 0 included), keep the order. Default: for good. Changes no state."""
        return math.inf, UNLIMITED_STEPS

    def repeats_chunk(self, output: SchedulerOutput) -> bool:
        """Is `output` decodes (one token each) plus one prompt chunk taking the whole token
        budget they leave, such that, whatever arrives, the next `schedule` calls would run the
        same decodes and that prompt's next chunks of the same size (every other request
        untouched) until the prompt's last chunk, a decode's finish or the step whose decode
        blocks do not fit? The prompt's chunks allocate and register no KV block (taken at
        admission) unless `chunks_allocate`. Then the engine fast-forwards those steps
        (`replica/chunk_stretch.py`). Must not change any state. The default, False, steps
        them one by one."""
        return False

    # Does each of those steps allocate the prompt's blocks for its chunk and register its
    # completed keyed blocks, as `allocate_slots` (vLLM v1), rather than none (sarathi)?
    chunks_allocate = False

    def arrival_keeps_batch(self, req: Request | None) -> bool:
        """Asked while a fast-forwarded stretch planned from this policy's last `schedule`
        runs (repeat held, nothing changed here since): would every `schedule` call until
        the stretch's next stop choose the same batch with `req` in the waiting queue? Then
        the engine queues `req` and the stretch goes on (its waiting count grows from the next
        step). `req=None`: would that hold for any request (the stretch is then priced past the
        next arrival)? Changes no state. The default, False, cuts the stretch."""
        return False

    def arrivals_join(self, num_running: int) -> list[tuple[Request, int]] | None:
        """At a step boundary of a stretch through finishes where arrivals cut it, `num_running`
        still decoding: if the next `schedule` would run each for one token and admit every
        waiting request whole with no prefix hit (the engine checks the KV blocks), the
        (request, prompt tokens) that `join` admits, and the stretch goes on with them. Changes
        no state. The default, None, ends the stretch there."""
        return None

    def join(self, joins: list[tuple[Request, int]], out: SchedulerOutput) -> None:
        """Admit the requests `arrivals_join` listed, as `schedule` would have."""
        raise NotImplementedError

    def finish_admission(self) -> bool:
        """May a stretch planned from this policy's last `schedule` (which repeats only up to
        the first finish, requests waiting) run through finishes, asking `finish_admits` at
        the step boundary after each (`replica/admission_stretch.py`)? Changes no state. The
        default, False, ends the stretch at the first finish."""
        return False

    def finish_admits(self, num_running: int, free_blocks: int) -> list[tuple[Request, int]] | None:
        """At a step boundary of such a stretch after finishes, `num_running` still decoding
        (the finished ones are still listed in `running`) and `free_blocks` free once their
        blocks for the next step are allocated: the (request, prompt tokens) the next
        `schedule` admits, each whole with no prefix hit, such that every later `schedule`
        admits nothing until the next finish (the queue empty or its head waiting for KV
        blocks, which decodes only make scarcer); [] if it admits nothing. None when that is
        not determined: the stretch ends there. Changes no state."""
        return None

    def finish_departs(self, reqs: list[Request]) -> None:
        """Told at a boundary of such a stretch, before `finish_admits`: the requests that left
        it since its last boundary (still listed in `running`). A policy whose admission reads a
        total over the running requests (`batchllm`'s projected use) updates it here; stepping's
        next `schedule` computes it afresh, so a stretch that ends there discards it. Default:
        nothing."""

    def admit_at_finish(self, joins: list[tuple[Request, int]], out: SchedulerOutput) -> None:
        """Admit the requests `finish_admits` listed, as `schedule` would have (and keep what
        it would have noted about the head left waiting)."""
        self.join(joins, out)

    def join_blocks(self, joins: list[tuple[Request, int]]) -> tuple[int, int]:
        """(KV blocks `join` allocates for `joins`, free blocks it must leave beyond them): by
        default each prompt's blocks and none (a policy reserving more or keeping a watermark says so)."""
        bs = self.kv.block_size
        return sum([-(-n // bs) for _, n in joins]), 0  # (`cdiv` written out: once per arrival joining)

    def nothing_pending(self, output: SchedulerOutput) -> bool:
        """The usual condition for repeating a step: everyone running got its tokens, nothing
        was preempted or swapped, and nothing waits (new or swapped) to be admitted."""
        return (not (output.preempted or output.swapped_out or output.swapped_in or self.num_waiting or self.swapped)
                and len(output.scheduled) == len(self.running))

    # ---- lifecycle hooks -----------------------------------------------------------
    def add_request(self, req: Request, now_s: float) -> None:
        self.waiting.append(req)

    def add_transferred(self, req: Request, now_s: float) -> None:
        """A request whose KV was computed on another replica arrived in blocks already
        reserved for it (`KVCacheManager.reserve`): it joins the running batch and is scheduled
        from the next step on (its first token, or its next decode)."""
        self.running.append(req)

    def finish(self, req: Request, now_s: float) -> None:
        """The request emitted its last token: release it."""
        self.running.remove(req)
        self.kv.free(req.id)
        self.forget(req)

    def forget(self, req: Request) -> None:
        """Drop the policy's per-request state (the request finished or was removed)."""

    def remove(self, req: Request, now_s: float) -> bool:
        """Take `req` out of this scheduler wherever it is (waiting, running, swapped, or a
        policy's own structures) and free its GPU and CPU KV blocks, without giving it a
        terminal state: the caller decides (aborted, re-routed, migrated). False if this
        scheduler does not hold it. Call it between steps: a request in the step the engine
        is running is the engine's to drop from that step."""
        queue = next((q for q in self.queues() if any(r is req for r in q)), None)
        if queue is None:
            return False
        queue.remove(req)
        self.swap_ready_s.pop(req.id, None)
        self.kv.free(req.id)
        self.kv.free_cpu(req.id)
        self.forget(req)
        return True

    def next_timer_s(self) -> float:
        """Time of the next policy timer that can change decisions (inf if none).

        The engine stops fast-forwarding before it and, when it goes idle with work left,
        wakes up at it to call `schedule` again (TTL expiries, periodic ticks, swap-ins).
        """
        ready = self.swap_ready_s  # (asked at every stretch planned: empty unless swaps overlap)
        return min(ready.values()) if ready else float("inf")

    def swap_done(self, req: Request, ready_s: float) -> None:
        """An overlapped swap-in of `req` completes at `ready_s` (the engine priced the copy):
        the request must not be scheduled before."""
        self.swap_ready_s[req.id] = ready_s

    def admission_error(self, req: Request) -> str | None:
        """Why this policy can never serve `req` (the engine rejects it), or None."""
        return None

    def drain(self, now_s: float) -> list[Request]:
        """End of run: take out every request still held, freeing its KV and whatever the
        policy holds beyond its requests (pins, CPU copies); return them, for the caller to
        give a terminal state."""
        held = self.unfinished()
        for req in held:
            self.kv.free(req.id)
            self.kv.free_cpu(req.id)
        for queue in self.queues():
            queue.clear()
        self.swap_ready_s.clear()
        self.kv.drop_cpu_copies()
        return held

    def end_step(self, output: SchedulerOutput, now_s: float, num_engine_steps: int) -> None:
        """The engine advanced the requests of `output` (and ran `finish` for those done);
        `num_engine_steps` steps have run so far."""
        self.num_engine_steps = num_engine_steps
        self.on_step_end(output, now_s)

    def on_step_end(self, output: SchedulerOutput, now_s: float) -> None:
        """Policy hook called by `end_step` (after `num_engine_steps` is up to date)."""

    # ---- helpers shared by policies ------------------------------------------------
    def start(self, req: Request, num_cached: int, num_tokens: int, out: SchedulerOutput) -> None:
        """Move an admitted request (blocks allocated, `num_cached` prompt tokens hit in the
        prefix cache) to running, scheduled with `num_tokens` tokens this step."""
        self.running.append(req)
        req.state = RequestState.RUNNING
        req.num_computed_tokens = num_cached
        if req.num_preemptions == 0:
            req.num_cached_tokens = num_cached
        req.num_cached_tokens_total += num_cached
        self.kv.record_query(req.num_tokens, num_cached)
        out.scheduled.append((req, num_tokens))

    def preempt(self, req: Request, out: SchedulerOutput) -> None:
        """Preempt by recompute: free the blocks, forget progress, re-queue at the front, and
        record it in this step's output. Its computed blocks stay hittable until evicted
        (`KVCacheManager.free_preempted`)."""
        self.kv.free_preempted(req)
        req.state = RequestState.PREEMPTED
        req.num_computed_tokens = 0
        req.num_preemptions += 1
        self.waiting.prepend(req)
        out.preempted.append(req)

    def swap_out(self, req: Request, out: SchedulerOutput, reuse_key=None) -> bool:
        """Preempt by swap: move the KV to the CPU tier now (vLLM v0 frees the GPU blocks in
        the same decision) and record it in `out`; False if the CPU tier is full."""
        blocks = self.kv.swap_out(req.id, reuse_key)
        if blocks is None:
            return False
        req.state = RequestState.SWAPPED
        req.num_preemptions += 1
        out.swapped_out.append(req)
        out.swap_out_blocks.append(blocks)
        return True

    def swap_in(self, req: Request, out: SchedulerOutput, keep_cpu_copy: bool = False) -> bool:
        """Bring a swapped request's KV back to the GPU and record it; False if no room."""
        blocks = self.kv.swap_in(req.id, keep_cpu_copy)
        if blocks is None:
            return False
        req.state = RequestState.RUNNING
        out.swapped_in.append(req)
        out.swap_in_blocks.append(blocks)
        return True

    def is_swap_ready(self, req: Request, now_s: float) -> bool:
        """Has the request's overlapped swap-in (if any) completed by `now_s`?"""
        t = self.swap_ready_s.get(req.id)
        if t is None:
            return True
        if t <= now_s:
            del self.swap_ready_s[req.id]
            return True
        return False

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    def queues(self) -> tuple:
        """Every container this policy keeps requests in (override to add its own)."""
        return (self.running, self.waiting, self.swapped)

    def unfinished(self) -> list[Request]:
        """Every request still held (for end-of-run accounting)."""
        return [req for queue in self.queues() for req in queue]
