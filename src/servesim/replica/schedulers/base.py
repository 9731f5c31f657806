"""The scheduler plug-in contract.

A scheduler owns the replica's queues and decides, once per engine step, which requests run
and with how many tokens. It allocates KV blocks through the engine's `KVCacheManager` while
it decides (as vLLM does), and may preempt. It never advances time or request progress: the
engine runs the step through the performance model and, at the step's end, advances
`num_computed_tokens`, emits tokens, calls `finish` for completed requests, then `end_step`.
The engine only calls methods: it never writes a scheduler's fields or touches its queues
(`add_request`, `schedule`, `swap_done`, `finish`, `end_step`, `remove`, `drain`, `next_timer_s`,
`admission_error`, the read-only counts, and the fast-forward hooks of `fast_forward_hooks.py`).

To add a policy: one file in this folder with a `Scheduler` subclass decorated with
`@register("name")` and a pydantic `Params` model whose fields carry the reference
implementation's names, defaults and docstrings. Nothing else needs editing. A policy built
on vLLM's mechanics subclasses `vllm_steps.VLLMSteps` and supplies only its order and victims.
What the decisions return (`SchedulerOutput`, `FastForward`) is defined in `outputs.py`.
"""

from __future__ import annotations

from itertools import filterfalse
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from servesim.replica.kv_cache import KVCacheManager
from servesim.replica.schedulers.outputs import (
    NO_FAST_FORWARD, REPEAT_AFTER_PREFILL, REPEAT_DECODES, REPEAT_THROUGH, UNLIMITED_STEPS, FastForward,
    SchedulerOutput,
)
from servesim.replica.schedulers.fast_forward_hooks import FastForwardHooks
from servesim.replica.schedulers.queues import make_queue
from servesim.replica.swap import VLLM_V0_SWAP, SwapMechanics
from servesim.workload.request import Request, RequestState

if TYPE_CHECKING:
    from collections.abc import Callable

    from servesim.replica.config import EngineConfig

__all__ = ["NO_FAST_FORWARD", "REPEAT_AFTER_PREFILL", "REPEAT_DECODES", "REPEAT_THROUGH", "UNLIMITED_STEPS",
           "FastForward", "Scheduler", "SchedulerOutput", "SchedulerParams"]


class SchedulerParams(BaseModel):
    """Base of every scheduler's parameters (unknown keys are rejected)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class Scheduler(FastForwardHooks):
    """Base class: queues, bookkeeping helpers and the default hooks."""

    name: ClassVar[str] = ""
    # Does the policy order requests by their prefix keys' values (not only by what they hit)?
    # Then the engine keys every hash id (`Engine.shared_keys_only` stays off).
    sorts_by_keys: ClassVar[bool] = False
    # Does the policy ever look a request up in the prefix cache (`get_computed_blocks`)? One
    # that computes every prompt in full (sarathi, vtc and orca here: their admissions never look
    # one up) does not: its blocks' keys are then read only from outside the replica (a router
    # reading its cache, a KV store, disaggregation), and where nothing outside reads them its
    # KV cache runs without prefix caching (`PoolSpec.cache_read_outside`): no request is
    # hashed or keyed, and the results are the same, since nothing the keys change is read.
    looks_up_prefixes: ClassVar[bool] = True
    Params: ClassVar[type[SchedulerParams]] = SchedulerParams
    # How this policy's swaps are executed (copy granularity, sync or overlapped); the engine
    # prices `SchedulerOutput.swapped_out/in` with it. A policy may set it per instance.
    swap_mechanics: SwapMechanics = VLLM_V0_SWAP
    # Whether this policy serves requests that name a LoRA adapter (`replica/lora.py`); the
    # engine rejects such requests, with a reason, on policies that do not.
    supports_lora: ClassVar[bool] = False

    def __init__(self, params: SchedulerParams, config: EngineConfig, kv: KVCacheManager, perf: Any) -> None:
        self.params = params
        self.config = config
        # The limits every admission reads (`first_chunk`, arrivals joining a stretch), as plain
        # values: a read of a pydantic model's field takes about four plain reads (its class's
        # `__getattr__` hook keeps the interpreter off its specialized attribute path)
        self.limits = (config.max_num_seqs, config.max_num_batched_tokens, config.long_prefill_token_threshold,
                       config.enable_chunked_prefill)
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

    # ---- lifecycle hooks -----------------------------------------------------------
    def add_request(self, req: Request, now_s: float) -> None:
        self.waiting.append(req)

    def add_transferred(self, req: Request, now_s: float) -> None:
        """A request whose KV was computed on another replica arrived in blocks already
        reserved for it (`KVCacheManager.reserve`): it joins the running batch and is scheduled
        from the next step on (its first token, or its next decode)."""
        self.running.append(req)

    def resume_at(self, num_engine_steps: int) -> None:
        """This fresh scheduler takes over an engine that ran `num_engine_steps` steps (a replica
        back from a crash, or started again by an autoscaler): the count goes on, as the step
        log's does, so that a policy counting steps since a mark it set (vtc's decode steps,
        sglang's ratio decay) reads it right at its first step."""
        self.num_engine_steps = num_engine_steps

    def transfer_tokens(self, req: Request, num_tokens: int) -> int:
        """Tokens to reserve blocks for here before `req`'s KV for `num_tokens` tokens arrives
        from another replica (a decode hand-off, a live migration): those, unless the policy
        holds blocks for more from a request's admission on (Orca's reservation)."""
        return num_tokens

    def transfer_room(self) -> int:
        """KV blocks a transfer's reservation may take here (`transfer_tokens`' blocks): the
        free ones, less what the policy has promised its running requests (TensorRT-LLM's
        no-evict reservations)."""
        return self.kv.num_free_blocks

    def running_order_key(self):
        """The key `schedule` sorts the running batch by (None: it stays in admission order). A
        reader between steps (the migrator) sorts by it: a stretch keeps its first step's order
        with its joiners appended, where stepping's sorts would have placed them."""
        return None

    def waiting_head(self) -> Request:
        """The waiting request this policy would consider first (the migrator's head of line)."""
        return self.waiting.peek()

    def finish(self, req: Request, now_s: float) -> None:
        """The request emitted its last token: release it."""
        self.running.remove(req)
        self.kv.free(req.id)
        self.forget(req)

    def finish_all(self, reqs: list[Request], now_s: float) -> None:
        """`finish` of each of `reqs` in order (those a step or a stretch finished). With this
        class's `finish` and a `forget` that is `batch_free_forget`: one pass over `running`,
        their KV blocks freed at once (`KVCacheManager.free_all`), then each forgotten in
        order, instead of a scan and a release per request."""
        cls = type(self)
        if len(reqs) < 2 or cls.finish is not Scheduler.finish or cls.forget is not cls.batch_free_forget:
            for req in reqs:
                self.finish(req, now_s)
            return
        self._finish_at_once(reqs)

    def _finish_at_once(self, reqs: list[Request]) -> None:
        """`finish_all`'s pass: `Scheduler.finish` of each of `reqs`, their blocks freed at once."""
        cls = type(self)
        gone = set(reqs)  # (requests hash and compare by identity: the filter runs in C)
        running = self.running
        kept = list(filterfalse(gone.__contains__, running))
        if len(kept) != len(running) - len(gone):
            raise ValueError("a finished request was not running")  # (as `list.remove` would)
        running[:] = kept
        self.kv.free_all([r.id for r in reqs])
        if cls.forget is not Scheduler.forget:
            for req in reqs:
                self.forget(req)

    def forget(self, req: Request) -> None:
        """Drop the policy's per-request state (the request finished or was removed)."""

    # A policy's `forget` that reads and writes only the policy's own per-request state (not
    # `running`, the queues or the KV cache), so `finish_all` may take all of a step's finishes
    # out of `running` and free their blocks before it forgets them. A policy sets it to its
    # `forget` once checked; naming the function, not a flag, keeps a subclass that overrides
    # `forget` on the one-by-one path until its own is checked too.
    batch_free_forget: ClassVar[Callable[[Any, Request], None]] = forget

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
        self.kv.record_query(req.prompt_len + req.num_output_tokens, num_cached)  # (`num_tokens`, without its property call)
        out.scheduled.append((req, num_tokens))

    def preempt(self, req: Request, out: SchedulerOutput) -> None:
        """Preempt by recompute: free the blocks, forget progress, re-queue at the front, and
        record it in this step's output. Its computed blocks stay hittable until evicted
        (`KVCacheManager.free_preempted`)."""
        if req.num_shared_hash_ids is not None and self.may_swap:
            self.key_every_id(req, out)
        self.kv.free_preempted(req)
        req.state = RequestState.PREEMPTED
        req.num_computed_tokens = 0
        req.num_preemptions += 1
        self.waiting.prepend(req)
        out.preempted.append(req)

    @property
    def may_swap(self) -> bool:
        """Can this policy preempt by swap (`swap_out`)? A request swapped in again registers its
        keys over plain blocks while its old blocks age in the free queue, so its later hits
        depend on every key it has: such a policy keys every hash id of a request from its first
        preemption on (`key_every_id`; before it, only the shared ones: `Engine.shared_keys_only`)."""
        return False

    def key_every_id(self, req: Request, out: SchedulerOutput) -> None:
        """`KVCacheManager.key_every_id` of a request about to be preempted, with the tokens it
        holds blocks for: computed, and given to it in this step's output so far (once: the
        request then keys every id)."""
        n = req.num_computed_tokens
        if out.scheduled:
            n += sum([t for r, t in out.scheduled if r is req])
        self.kv.key_every_id(req, n)

    def swap_out(self, req: Request, out: SchedulerOutput, reuse_key=None) -> bool:
        """Preempt by swap: move the KV to the CPU tier now (vLLM v0 frees the GPU blocks in
        the same decision) and record it in `out`; False if the CPU tier is full."""
        if not self.may_swap:
            raise AssertionError(f"{type(self).__name__} swaps but says it may not (`may_swap`)")
        if req.num_shared_hash_ids is not None:
            self.key_every_id(req, out)
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
