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

from typing import Any, Iterator

from servesim.replica.schedulers import register
from servesim.replica.schedulers.arrival_joins import admit_whole, whole_prompts
from servesim.replica.schedulers.base import (
    NO_FAST_FORWARD, REPEAT_AFTER_PREFILL, REPEAT_DECODES, REPEAT_THROUGH, FastForward, SchedulerOutput,
    SchedulerParams,
)
from servesim.replica.schedulers.finish_admits import admits_of
from servesim.replica.schedulers.queues import CountsAppends, SortedWaiting, kept_order
from servesim.replica.schedulers.vllm_steps import VLLMSteps
from servesim.workload.request import Request, RequestState


class KeyedScheduler(CountsAppends, VLLMSteps):
    """Unified-budget scheduler whose every choice follows `key(req)` (smaller = first)."""

    preempt_for_waiting: bool = True
    preemption_mode: str = "recompute"  # or "swap": victims go to the CPU tier when it has room
    # The key of a request never changes (it depends on the request alone): a waiting head
    # that cannot be admitted stays blocked while only decodes run (see `fast_forward`).
    static_keys: bool = False
    # A request's key does not change while it waits (it is computed when the request enters
    # the queue and the waiting queue is sorted on the stored keys, without Python calls).
    static_waiting_keys: bool = False
    _head_blocked = False
    # ... and blocked by KV blocks or sequence slots (not by the budget, which this step's
    # prompts used): it stays blocked after those prompts are done too
    _head_blocked_by_kv = False
    _blocked_head: Request | None = None  # the waiting head the two flags are about
    _num_sorted = 0  # leading running requests in key order (`_admit`, `_make_room`)
    _sorted_static = False  # the last sort was by static keys

    def __init__(self, params, config, kv, perf) -> None:
        super().__init__(params, config, kv, perf)
        self.now_s = 0.0
        self._waiting_keys: dict[Request, Any] = {}  # (`static_waiting_keys`; requests hash by identity)
        # fixed keys: the queue stays sorted between steps (a request's key is stored before
        # it joins the queue)
        self.waiting = SortedWaiting(self._waiting_keys.__getitem__ if self.static_waiting_keys else None)

    def add_request(self, req: Request, now_s: float) -> None:
        if self.static_waiting_keys:
            self._waiting_keys[req] = self.key(req)
        super().add_request(req, now_s)

    def add_transferred(self, req: Request, now_s: float) -> None:
        if self.static_waiting_keys:  # (read by `sort_key` while the keys are static)
            self._waiting_keys[req] = self.key(req)
        super().add_transferred(req, now_s)  # (counted: `CountsAppends`)

    def preempt(self, req: Request, out: SchedulerOutput) -> None:
        if self.static_waiting_keys:
            self._waiting_keys[req] = self.key(req)  # (a preemption leaves the key as it is)
        super().preempt(req, out)

    def forget(self, req: Request) -> None:
        self._waiting_keys.pop(req, None)

    # Its own table only: a step's finishes leave `running` in one pass (`finish_all`). A
    # subclass that extends `forget` names its own once checked (edf, batchllm, autellix).
    batch_free_forget = forget

    def key(self, req: Request) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def sort_key(self):
        """The key function the step's sorts use (a policy may hand a faster equivalent).
        Static keys are the ones stored when each request arrived or was preempted (every
        held request has one): a dict lookup instead of a Python call per request and step."""
        return self._waiting_keys.__getitem__ if self.static_keys and self.static_waiting_keys else self.key

    def running_order_key(self):
        return self.key

    def preempt_key(self, req: Request) -> Any:
        """What a waiting request must beat to preempt a running one (default: the key)."""
        return self.key(req)

    def begin_step(self, now_s: float) -> None:
        """Update time-varying state before the keys are read (subclass hook)."""

    def schedule(self, now_s: float) -> SchedulerOutput:
        self.now_s = now_s
        self.begin_step(now_s)
        key = self.sort_key()
        self._order_running(key)
        self.waiting.sort(key=self._waiting_keys.__getitem__ if self.static_waiting_keys else key)
        out = SchedulerOutput()
        self._head_blocked = self._head_blocked_by_kv = False
        # running requests in key order; the victim is the largest key (`running[-1]`)
        budget = self.schedule_running(out, self.config.max_num_batched_tokens, self._swaps)
        if not out.preempted and not out.swapped_out:
            self._admit(out, budget)
        return out

    def _order_running(self, key) -> None:
        """Sort `running` by `key`. With static keys, then and now, only the requests appended
        since the last sort (`CountsAppends`) are placed (`kept_order`): the same order, as a
        request's key ends with its id (unique keys, one sorted order). (Autellix's levels move
        a dozen calls of a few hundred a step under overload: placing those cost what the sort
        did.)"""
        static, appended = self.static_keys, self._appended
        self._appended = 0
        if static and self._sorted_static:
            if appended:  # (none: in order as it is)
                self.running[:] = kept_order(self.running, appended, key)
        else:
            self.running.sort(key=key)
        self._sorted_static = static

    @property
    def _swaps(self) -> bool:
        return self.preemption_mode == "swap"

    @property
    def may_swap(self) -> bool:
        return self._swaps

    # ------------------------------------------------------------------ waiting and swapped
    def _admit(self, out: SchedulerOutput, budget: int) -> None:
        """Admit waiting (and swap in swapped) requests in key order; a head that cannot get
        room, even by preempting requests with a larger preemption key, blocks the rest."""
        cands = _merged(list(self.waiting), self.swapped, self.sort_key()) if self.swapped else list(self.waiting)
        # `running` is in key order here (sorted at the step's start, nothing evicted since): its
        # first `_num_sorted` stay so, the requests admitted below join after them
        self._num_sorted = len(self.running)
        for req in cands:
            if budget <= 0 or req in out.preempted or req in out.swapped_out:
                self._head_blocked = self.static_keys and budget <= 0  # decodes use the same budget next step
                break  # a request preempted this very step does not come straight back
            if req.state == RequestState.SWAPPED:
                while len(self.running) >= self.config.max_num_seqs or self.swap_in_room(req) < 0:
                    if (refund := self._make_room(req, out)) is None:
                        return
                    budget += refund
                budget -= self.resume(req, out, self.tokens_for(req, budget))
                continue
            left = self.admit(req, budget, out, self._make_room)
            if left is None:
                # Head-of-line blocking. With static keys no running request can become a
                # victim; without prefix keys the head's need is fixed while decode-only steps
                # only take blocks, so (as in `vllm`) it stays blocked until something finishes.
                self._head_blocked = self.static_keys and not req.kv_block_keys
                self._head_blocked_by_kv = self._head_blocked and self.first_chunk(req, 0, budget) > 0
                self._blocked_head = req
                return
            budget = left

    def _make_room(self, req: Request, out: SchedulerOutput) -> int | None:
        """Evict the running request with the largest key if `req` beats it (its refund)."""
        if not (self.preempt_for_waiting and self.running):
            return None
        # The largest key: the sorted part's last or one admitted since (the keys are unique).
        running, k = self.running, self._num_sorted
        victim = max(running[k - 1:] if k else running, key=self.sort_key())
        if not self.preempt_key(victim) > self.preempt_key(req):
            return None
        if k and victim is running[k - 1]:
            self._num_sorted = k - 1
        return self.evict(victim, out, self._swaps)

    def fast_forward(self, output: SchedulerOutput) -> FastForward:
        # With nothing waiting, no preemption and everyone scheduled, the next steps give every
        # running request one token (prompts finished now decode with the rest), and a finish
        # admits nobody. A head that stays blocked holds the batch too, until a finish.
        if self.nothing_pending(output):
            return REPEAT_THROUGH
        if self._head_blocked and not self.swapped and self._steady(output):
            return REPEAT_AFTER_PREFILL if self._head_blocked_by_kv else REPEAT_DECODES
        return NO_FAST_FORWARD

    def repeats_chunk(self, output: SchedulerOutput) -> bool:
        # vLLM's chunk step (`repeats_running_chunk`) in key order, the prompt's key the
        # largest: with static keys each step's sort then leaves the running order as it is
        # (one admitted in this step with a smaller key would run first from the next step,
        # taking the budget; nobody joins later: no budget is left), and
        # `_admit` stops at once on the spent budget, so no waiting request, however small its
        # key, preempts anyone (`_make_room` runs only from an admission) until the prompt's
        # last chunk; the flags it sets there are reset by every `schedule` before they are
        # read. Only this class's `schedule` and no per-step state of the policy
        # (`admits_joins`: `edf`'s step-end pass keeps nothing while its keys are static);
        # nothing swapped (a swap-in is an admission too).
        return (type(self).schedule is KeyedScheduler.schedule and self.static_keys and self.admits_joins()
                and not self.swapped and self.repeats_running_chunk(output, output.num_known_decodes)
                and self._sorts_last(self.running[-1]))

    def _sorts_last(self, req: Request) -> bool:
        """Is `req`'s key larger than every other running request's (static keys)? `req`: the
        last running request, or one not running."""
        key = self.sort_key()
        running = self.running
        others = running[:-1] if running and running[-1] is req else running
        return not others or max(map(key, others)) < key(req)  # (in C: the key is a dict's lookup)

    def repeat_order(self, output: SchedulerOutput) -> list[Request] | None:
        # Each step re-sorts the running requests by key: a static key gives the repeated
        # steps one order (prompts admitted in step 0 take their place in it); a key that
        # progress changes (service, deadlines) may not, unless the policy knows better.
        return sorted((r for r, _ in output.scheduled), key=self.key) if self.static_keys else None

    def arrival_keeps_batch(self, req: Request | None) -> bool:
        # With static keys, a newcomer sorting after a head that KV blocks or sequence slots
        # hold back is never looked at (admission stops at the head), as in `vllm`. The next
        # arrival (None) is guessed to sort after it, as a later one of the same priority
        # does: the stretch is priced past it, and cut there if it is not kept after all.
        if not (self._head_blocked_by_kv and self.waiting and not self.swapped):
            return False
        head = self.waiting.peek()
        return head is self._blocked_head and (req is None or self.key(req) > self._waiting_keys.get(head, self.key(head)))

    def admits_joins(self) -> bool:
        """Does the next `schedule` admit the waiting requests as `arrivals_join` assumes: no
        per-step state of the policy (`begin_step`, `on_step_end`) that a join would skip?
        Each policy answers (default: no)."""
        return False

    def arrivals_join(self, num_running: int) -> list[tuple[Request, int]] | None:
        # The running pass gives every decode its token (the engine checks the blocks), then
        # `_admit` takes the waiting requests in key order; one admitted whole never calls
        # `_make_room`, so with nothing swapped this is vLLM's admission in that order.
        if self.swapped or type(self).schedule is not KeyedScheduler.schedule or not self.admits_joins():
            return None
        cfg = self.config
        return whole_prompts(sorted(self.waiting, key=self._waiting_sort_key()), len(self.running), num_running,
                             cfg.max_num_seqs, cfg.max_num_batched_tokens,
                             lambda req, budget: self.first_chunk(req, 0, budget))

    def join(self, joins: list[tuple[Request, int]], out: SchedulerOutput) -> None:
        self.before_join()
        admit_whole(self, joins, out)

    def before_join(self) -> None:
        """What `schedule` sets before its admission, set by a join admitting in its place
        (`join`; `replica/keyed_join.py`)."""
        self.waiting.sort(key=self._waiting_sort_key())  # (as `schedule`: the order `arrivals_join` used)
        self._head_blocked = self._head_blocked_by_kv = False

    def joins_last(self, req: Request, now_s: float) -> bool:
        """Would `req`, admitted into the stretch in flight, run after every running request in
        its later steps (`replica/keyed_join.py`)? With static keys and its key the largest
        (a later arrival of the same priority), each step's sort leaves it last; with nothing
        swapped (`arrivals_join`'s condition), its admission is vLLM's."""
        return not self.swapped and self.static_keys and self._sorts_last(req)

    def finish_admission(self) -> bool:
        # static keys: the order of the waiting queue and the victims' keys never move; no
        # per-step state a skipped `schedule` would have changed (`admits_joins`)
        return (type(self).schedule is KeyedScheduler.schedule and self.static_keys and self.admits_joins()
                and not self.swapped)

    def finish_admits(self, num_running: int, free_blocks: int) -> list[tuple[Request, int]] | None:
        # `_admit` in key order (the queue, kept sorted, is iterated so); a head left waiting
        # must not beat the running request with the largest key (`_make_room` would evict it)
        if not (self.finish_admission() and self.waiting.clean):
            return None
        found = admits_of(self, num_running, free_blocks, lambda req, budget: self.first_chunk(req, 0, budget),
                          chunk=True)  # (`schedule_running` gives a chunked prompt its rest first)
        if found is None:
            return None
        joins, head = found
        if head is not None and self.preempt_for_waiting and self.running:
            # `_make_room`'s victim over `running`, which still lists the finished requests: a
            # larger key there may be one of them, so that case is left to stepping
            k = self._num_sorted
            victim = max(self.running[k - 1:] if k else self.running, key=self.sort_key())
            if self.preempt_key(victim) > self.preempt_key(head):
                return None
        return joins

    def admit_at_finish(self, joins: list[tuple[Request, int]], out: SchedulerOutput) -> None:
        self.join(joins, out)
        if self.waiting:  # (`finish_admits` stopped at a head whose blocks are not free)
            self._head_blocked = self._head_blocked_by_kv = True
            self._blocked_head = self.waiting.peek()

    def _waiting_sort_key(self):
        """The key `schedule` sorts the waiting queue by."""
        return self._waiting_keys.__getitem__ if self.static_waiting_keys else self.sort_key()

    def _steady(self, output: SchedulerOutput) -> bool:
        """Everyone running got its tokens and nobody was preempted or swapped this step."""
        return (not (output.preempted or output.swapped_out or output.swapped_in)
                and len(output.scheduled) == len(self.running))


def _merged(waiting: list[Request], swapped: list[Request], key) -> Iterator[Request]:
    """`sorted(waiting + swapped, key=key)`, lazily, for `waiting` already sorted by `key`
    (admission usually stops after a few requests)."""
    swapped = sorted(swapped, key=key)
    keys = [key(r) for r in swapped]
    i = j = 0
    while i < len(waiting) and j < len(swapped):
        if keys[j] < key(waiting[i]):  # (ties: waiting first, as the stable sort)
            yield swapped[j]
            j += 1
        else:
            yield waiting[i]
            i += 1
    yield from waiting[i:]
    yield from swapped[j:]


class PriorityParams(SchedulerParams):
    preemption: bool = True
    """Preempt lower-priority running requests (recompute) when a higher-priority waiting
    request cannot get blocks or a sequence slot. False = vLLM v1 `priority` (no proactive
    preemption; lower-priority requests are only preempted when an allocation fails)."""


@register("priority")
class PriorityScheduler(KeyedScheduler):
    """Strict priority: `(priority, arrival)` order, lower value first, with preemption."""

    Params = PriorityParams
    static_keys = True
    static_waiting_keys = True

    def __init__(self, params, config, kv, perf) -> None:
        super().__init__(params, config, kv, perf)
        self.preempt_for_waiting = params.preemption

    def key(self, req: Request) -> tuple:
        return (req.priority, req.arrival_s, req.id)

    def admits_joins(self) -> bool:
        return True  # (static keys, no per-step state)
