"""Autellix (Luo et al., 2025): program-level scheduling for agent programs.

A *process table* tracks, per program (`Request.program_id`, else the chat session
`session_id` — the paper's chatbot programs — else the request alone), the service it attained — here the engine time of the steps its calls took part in
— and the time its calls waited. Calls are ordered by a multi-level queue over that service:
- PLAS (single-threaded programs): a call's priority is its program's attained service,
  including completed calls, so a new call of a long program does not enter the top queue
  (the difference to call-level MLFQ);
- ATLAS (programs with parallel calls): a call's priority is the service along its program's
  critical path: max over its parents of (parent priority + parent service), plus its own;
- queue level = how many thresholds `base_quantum_s * quantum_ratio**i` (i < num_queues - 1)
  the priority has passed; within a level calls go first come, first served;
- anti-starvation: when a program's waiting time reaches `starvation_ratio` times its
  service, its service is forgotten (it returns to the top queue).
The batch follows the unified token budget of `priority` with the key (level, arrival): a
waiting call of a higher queue preempts lower-queue running calls (swapped to the CPU tier as
in the paper, or by recompute) when it lacks memory or a sequence slot. The multi-engine load balancer of the
paper is out of this single-replica policy's scope.

The quanta are geometric with ratio 2 as in public re-implementations; the paper's table of
thresholds was not available (see docs/scheduling.md).

The per-step accounting (service, waiting time, promotions, keys: `on_step_end`) is
`AutellixAccounting`'s (`autellix_accounting.py`).
"""

from __future__ import annotations

import sys
from bisect import bisect_right
from math import inf, log
from typing import Literal

from pydantic import Field, model_validator

from servesim.replica.schedulers import register
from servesim.replica.schedulers.autellix_accounting import (LEVEL_SHIFT, AutellixAccounting, StepSums, arrival_order,
                                                             due_after)
from servesim.replica.schedulers.base import UNLIMITED_STEPS, SchedulerOutput, SchedulerParams
from servesim.replica.schedulers.priority import KeyedScheduler
from servesim.workload.request import Request


class AutellixParams(SchedulerParams):
    mode: Literal["plas", "atlas"] = "plas"
    """`plas`: program attained service; `atlas`: critical-path service (parallel programs)."""
    num_queues: int = Field(8, ge=1)
    """K, the number of queue levels."""
    base_quantum_s: float = Field(0.5, gt=0)
    """Service (engine seconds) that ends the first queue level."""
    quantum_ratio: float = Field(2.0, gt=1)
    """Growth of the level thresholds (geometric)."""
    starvation_ratio: float = Field(8.0, gt=0)
    """β: a program whose waiting time reaches β x its service goes back to the top queue."""
    preemption_mode: Literal["swap", "recompute"] = "swap"
    """How lower-queue calls are preempted: swap to the CPU tier (the paper; recompute when
    the CPU tier is full) or recompute."""

    @model_validator(mode="after")
    def _finite_levels(self) -> AutellixParams:
        top = log(self.base_quantum_s) + (self.num_queues - 2) * log(self.quantum_ratio)
        if top >= log(sys.float_info.max):
            raise ValueError(f"the last level threshold base_quantum_s x quantum_ratio^(num_queues - 2) "
                             f"({self.base_quantum_s:g} x {self.quantum_ratio:g}^{self.num_queues - 2}) is beyond a "
                             f"float; lower num_queues or quantum_ratio")
        return self


@register("autellix")
class AutellixScheduler(AutellixAccounting, KeyedScheduler):
    Params = AutellixParams
    reorders_running = True  # (each step sorts the batch by level, which service moves)
    # A turn joining with chunks: its first chunk at the join step s, its rest at s + 1 (within the
    # budget the decodes leave, so the level sort's place of it changes no one's tokens), no middle
    # chunk (one sorted before a decode would take the whole budget there).
    max_join_chunks = 1
    # Its own state in slots: with the base classes' 16 attributes, its 39 in the instance dict
    # were past CPython 3.11's 30 inline values (every attribute read took the dict's look-up)
    __slots__ = ("_calls_held", "_due", "_due_seq", "_entered", "_idle", "_idle_keyed", "_joined", "_keys", "_lazy",
                 "_lazy_turn", "_queued_s", "_run_due", "_run_lazy", "_run_sums", "_step_start_s", "_told",
                 "_transferred", "_wait_sums", "call_base_s", "call_service_s", "discount_s", "preemption_mode",
                 "service_s", "thresholds", "wait_s")

    @property
    def arrival_reads_finishes(self) -> bool:
        # A newcomer's key reads its program's service, which its earlier calls' finishes
        # settle. `finish_noticed` settles a departing call's service at its last step, as the
        # stretch's end would, so that a later call (a chat's next turn, a user's next request)
        # reads it up to date. Not so for a program's calls (`program_id`): several may run at
        # once, and the others' service in the stretch so far is credited only at its end. The
        # stretches are planned with the running calls known, and only lone calls and turns
        # join them (`admits_joins`), so one look at the batch holds for the stretch.
        return any(r.program_id is not None for r in self.running)

    def __init__(self, params, config, kv, perf) -> None:
        super().__init__(params, config, kv, perf)
        p = params
        self.preemption_mode = p.preemption_mode
        self.thresholds = [p.base_quantum_s * p.quantum_ratio ** i for i in range(p.num_queues - 1)]
        self.service_s: dict[object, float] = {}  # process table: program -> attained service
        self.wait_s: dict[object, float] = {}  # program -> time its calls waited
        self.discount_s: dict[object, float] = {}  # forgotten service (anti-starvation)
        self.call_service_s: dict[int, float] = {}  # ATLAS: per call
        self.call_base_s: dict[int, float] = {}  # ATLAS: critical-path service before the call
        self._step_start_s = 0.0
        self._queued_s: dict[int, float] = {}  # when each waiting call (re-)entered the queue
        # Each held call's key, kept up to date: service and discounts change only at step
        # ends (`on_step_end` recomputes the keys of the programs served or promoted), so a
        # waiting call's key is not recomputed every step and the queue stays nearly sorted.
        self._keys: dict[Request, int] = {}  # (requests hash by identity)
        self.waiting.key = self._keys.__getitem__  # kept sorted: the waiting pass flags key changes
        # Waiting time added lazily: while a lone call (no program or session) waits, its
        # program's waiting time only grows by each step's length, and it cannot be promoted
        # before that time reaches starvation_ratio x its attained service (never, without
        # service). Such calls are skipped by the per-step pass until then (`_due`, a heap of
        # (time, seq, call)); `_lazy[call]` = (slot in `_wait_sums`, where each step's length
        # is added to its program's waiting time as the step ends, with the same float
        # additions; due time), and `_settle` reads it when the call stops waiting or is due.
        self._lazy: dict[Request, tuple[int, float]] = {}
        self._wait_sums = StepSums()
        self._entered: dict[Request, None] = {}  # queued (or swapped) since the last pass
        self._due: list[tuple[float, int, Request]] = []
        self._due_seq = 0
        # Service credited lazily too: a running lone call is credited each step's length
        # while it is scheduled, and its key (level) cannot change before its service reaches
        # the next threshold, at the earliest after that much time. `_run_lazy[call]` = (slot in
        # `_run_sums` holding its program's service, due time, slot holding its own service, or
        # -1 when it is the same float), each step's length added as the step ends (the same
        # float additions); `_settle_running` reads them when it leaves, finishes or misses a
        # step; when it is due, its key is read from them and it stays lazy (`_rekey_due`).
        self._run_lazy: dict[Request, tuple[int, float, int]] = {}
        self._run_sums = StepSums()
        self._run_due: list[tuple[float, int, Request]] = []
        # Running calls that missed a step (a prompt the budget left out, behind another's
        # chunks) stay eager until they are scheduled again: made lazy at each step's end, each
        # was settled at the next for missing it (a slot, a due entry and a settle per step
        # while it waits for budget). Eager credits give the same floats: nothing is added
        # while it is not scheduled, each step's length once it is.
        self._idle: set[Request] = set()
        # Those of them that are lone calls, keyed at the last step's end: while they stay idle
        # nothing moves their service or discount, so their keys stand (`_rekey_running` passes
        # over them: a Mooncake prompt waiting for budget behind another's chunks, step after step).
        self._idle_keyed: set[Request] | frozenset = frozenset()
        # A session's call is credited lazily too while it is its session's only call held (a
        # chat's turns follow one another): its program then serves only it and nothing else
        # moves its key, as for a lone call. `_calls_held[session]`: its calls held here;
        # `_lazy_turn[session]`: its lazy running call, settled when another call joins.
        self._calls_held: dict[object, int] = {}
        self._lazy_turn: dict[object, Request] = {}
        # Lone calls admitted into the stretch in flight (`join`) -> when each was queued: the
        # stretch's end credits them from their join step on and adds the time they waited.
        self._joined: dict[Request, float] = {}
        self._transferred = False  # a call joined running by `add_transferred` since `begin_step`
        # Calls told to have left the stretch in flight (`finish_noticed`), credited through
        # their last step already: the stretch's end (`forget`, `_credit`) passes over them.
        self._told: set[Request] = set()

    @staticmethod
    def program(req: Request) -> object:
        if req.program_id is not None:
            return req.program_id
        if req.session_id is not None:  # a multi-turn chat is a single-threaded program
            return ("session", req.session_id)
        return ("request", req.id)

    def _hold(self, req: Request) -> None:
        """Count a call of a session held here; a lazy sibling is credited first (its
        program's service must be up to date for the newcomer's key, and it is eager from
        now on)."""
        if req.program_id is None and req.session_id is not None:
            p = self.program(req)
            self._calls_held[p] = self._calls_held.get(p, 0) + 1
            sibling = self._lazy_turn.get(p)
            if sibling is not None:
                self._settle_running(sibling)

    def add_transferred(self, req: Request, now_s: float) -> None:
        # A call whose prefill ran on another replica: its program and call enter the process
        # table as an arrival's do (its decodes are credited to them), but it never queues here.
        self._register(req)
        self._transferred = True  # (it joins running without a key: `begin_step` makes it)
        super().add_transferred(req, now_s)

    def _register(self, req: Request) -> None:
        """The process-table entries of a call that arrives here (queued or transferred)."""
        self._hold(req)
        p = self.program(req)
        self.service_s.setdefault(p, 0.0)
        self.wait_s.setdefault(p, 0.0)
        self.call_service_s[req.id] = 0.0
        self.call_base_s[req.id] = max((self.call_base_s.get(c, 0.0) + self.call_service_s.get(c, 0.0)
                                        for c in req.parents), default=0.0)

    def add_request(self, req: Request, now_s: float) -> None:
        self._register(req)
        self._queued_s[req.id] = now_s
        self._keys[req] = self._fresh_key(req)  # (before it joins the queue: its place)
        super().add_request(req, now_s)
        self._entered[req] = None

    def attained_s(self, req: Request) -> float:
        self._settle_running(req)
        p = self.program(req)
        if self.params.mode == "atlas":
            raw = self.call_base_s[req.id] + self.call_service_s[req.id]
        else:
            raw = self.service_s[p]
        return max(raw - self.discount_s.get(p, 0.0), 0.0)

    def level(self, req: Request) -> int:
        return bisect_right(self.thresholds, self.attained_s(req))  # thresholds passed (increasing)

    def preempt(self, req: Request, out: SchedulerOutput) -> None:
        self._settle_running(req)
        self._idle.discard(req)
        super().preempt(req, out)
        self._queued_s[req.id] = self.now_s
        self._entered[req] = None

    def swap_out(self, req: Request, out, reuse_key=None) -> bool:
        self._settle_running(req)
        self._idle.discard(req)
        self._queued_s[req.id] = self.now_s
        self._entered[req] = None
        return super().swap_out(req, out, reuse_key)

    def finish_noticed(self, req: Request, now_s: float) -> None:
        # (`finish_notices.py`: `req`, a lone call or a chat's turn, left the stretch in flight at
        # `now_s`.) Its service through its last step, as a stretch ending there credits it:
        # the steps before the stretch (a lazy call's sums), then now - the stretch's start in
        # one addition (`_credit`'s for a call that finished at the stretch's last step). Its
        # session holds one call fewer, as `forget` counts: a next turn arriving before the
        # stretch ends is keyed, and made lazy, from its session's service up to date.
        self._settle_running(req)
        p = self.program(req)
        queued_s = self._joined.pop(req, None) if self._joined else None
        if queued_s is None:
            d = now_s - self._step_start_s
        else:  # (joined the stretch: served from its join step, after the wait `_joined_waits` adds)
            self.wait_s[p] = self.wait_s[p] + (req.first_scheduled_s - queued_s)
            d = now_s - req.first_scheduled_s
        self.service_s[p] += d
        self.call_service_s[req.id] += d
        self._told.add(req)
        self._release(req)

    def forget(self, req: Request) -> None:
        self._entered.pop(req, None)
        self._settle(req)
        self._settle_running(req)  # (a call finishing in this step is credited with it eagerly)
        self._idle.discard(req)
        self._queued_s.pop(req.id, None)  # (its service stays: the process table outlives calls)
        self._keys.pop(req, None)
        if self._told and req in self._told:  # (told at its last step: released then; `_credit` clears it)
            return
        self._release(req)

    def _release(self, req: Request) -> None:
        """One call fewer held by its session (a chat's turn)."""
        if req.program_id is None and req.session_id is not None:
            p = self.program(req)
            n = self._calls_held.get(p, 0) - 1
            if n > 0:
                self._calls_held[p] = n
            else:
                self._calls_held.pop(p, None)

    # Its own tables only (keys, lazy credits, the process and session tables): a step's
    # finishes leave `running` in one pass (`finish_all`) rather than a scan each.
    batch_free_forget = forget

    # ---- leaving the queues (settling the lazy credits: autellix_accounting.py) ----
    def start(self, req: Request, num_cached: int, num_tokens: int, out: SchedulerOutput) -> None:
        self._settle(req)  # admitted: it stops waiting (this step is not a waiting step)
        self._entered.pop(req, None)
        super().start(req, num_cached, num_tokens, out)

    def swap_in(self, req: Request, out: SchedulerOutput, keep_cpu_copy: bool = False) -> bool:
        self._settle(req)
        self._entered.pop(req, None)
        return super().swap_in(req, out, keep_cpu_copy)

    def drain(self, now_s: float) -> list[Request]:
        for req in list(self._lazy):
            self._settle(req)
        for req in list(self._run_lazy):
            self._settle_running(req)
        self._entered.clear()
        return super().drain(now_s)

    def _fresh_key(self, req: Request) -> int:
        return self.level(req) << LEVEL_SHIFT | arrival_order(req)  # ((level, arrival_s, id) as one int)

    def key(self, req: Request) -> int:
        k = self._keys.get(req)
        if k is None:
            k = self._keys[req] = self._fresh_key(req)
        return k

    def sort_key(self):
        return self._keys.__getitem__  # every held call has its key (`begin_step`)

    def preempt_key(self, req: Request) -> int:
        return self.key(req) >> LEVEL_SHIFT  # the level: only a higher queue preempts; within a queue, FCFS

    def begin_step(self, now_s: float) -> None:
        self._step_start_s = now_s
        # Every other running call has its key (made before it joined the queue, kept until
        # `forget`), so the pass runs only after a hand-over: not over the batch every step.
        if self._transferred:
            self._transferred = False
            keys = self._keys
            for req in self.running:  # (a call handed over by another replica joins running directly)
                if req not in keys:
                    keys[req] = self._fresh_key(req)

    # ---- arrivals joining a stretch -------------------------------------------------
    def admits_joins(self) -> bool:
        # Lone calls only: a call's program is its own, so its key is (level 0, arrival) and
        # its waiting time and service are its own; the step-end pass the join skips (the one
        # of the step it arrived in, which made it lazy with the time it waited) is what
        # `on_step_end` adds for it at the stretch's end (`_joined`).
        return all(r.program_id is None and r.session_id is None for r in self.waiting)

    def join(self, joins: list[tuple[Request, int]], out: SchedulerOutput) -> None:
        queued = self._queued_s
        for req, _ in joins:
            self._joined[req] = queued[req.id]
        super().join(joins, out)

    def joins_last(self, req: Request, now_s: float) -> bool:
        # A turn (or any call without a program) admitted by `replica/keyed_join.py` at `now_s`,
        # the start of step s, the only call waiting, nothing swapped. Stepping's pass at the end
        # of step s - 1 adds now_s - its arrival to its program's waiting time, which the join
        # adds at the stretch's end (`keyed_joined`, `_joined_waits`: the same float); so that
        # pass must not promote the program (a promotion forgets its service: another level).
        # Its program serves nothing else: a chat's turns follow one another (`_calls_held`).
        # Then step s's `_admit` takes it by vLLM's `admit` (it fits: `keyed_join` checks). Each
        # later step sorts the batch by level, which orders only its decodes (each gets its
        # token whatever the order, the blocks counted free) and the departures of one step,
        # before which the stretch ends (`reorders_running`); one at step s itself (a single
        # output token) would end it there, listed last: refused.
        if self.swapped or req.program_id is not None or req.output_len < 2:
            return False
        p = self.program(req)
        if req.session_id is not None and self._calls_held.get(p) != 1:
            return False
        if self.params.mode == "atlas":
            raw = self.call_base_s[req.id] + self.call_service_s[req.id]
        else:
            raw = self.service_s[p]
        attained = max(raw - self.discount_s.get(p, 0.0), 0.0)
        w = self.wait_s[p] + (now_s - self._queued_s[req.id])  # (`_wait_pass`'s, at step s - 1's end)
        return not (attained > 0 and w >= self.params.starvation_ratio * attained)

    def keyed_joined(self, req: Request) -> None:
        self._joined[req] = self._queued_s[req.id]  # (credited as `join`'s lone calls at the stretch's end)

    def join_order_limit(self, joins: list[tuple[Request, int]], now_s: float) -> float:
        # A lone call joins at level 0 with no service: its level changes only once the steps
        # from `now_s` on have served it the first threshold (less the lazy due times' margin).
        if not self.thresholds:
            return inf
        return due_after(now_s, self.thresholds[0])

    # ---- the order of repeated steps (speculative decoding) ------------------------
    def repeat_order(self, output: SchedulerOutput) -> list[Request]:
        # Each step sorts the running calls by (level, arrival): with nothing waiting (the only
        # case `fast_forward` repeats) the order changes only when a call's level does, which
        # `repeat_order_limit` bounds.
        return sorted((r for r, _ in output.scheduled), key=self.key)

    def repeat_order_limit(self, output: SchedulerOutput) -> tuple[float, int]:
        """The earliest time a scheduled call's service may reach its next threshold, counted
        from this step's start: a lazy call's due time; an eager call's distance to the
        threshold over the rate its service grows (PLAS: one step length per call of its
        program in the batch), less the margin of the lazy due times (float rounding)."""
        start, thresholds, atlas = self._step_start_s, self.thresholds, self.params.mode == "atlas"
        program, service, call_service = self.program, self.service_s, self.call_service_s
        base, discount, keys, run_lazy = self.call_base_s, self.discount_s, self._keys, self._run_lazy
        calls: dict[object, int] = {}
        for req, _ in output.scheduled:
            p = program(req)
            calls[p] = calls.get(p, 0) + 1
        until = inf
        for req, _ in output.scheduled:
            entry = run_lazy.get(req)
            if entry is not None:  # (its level cannot change before its due time)
                until = min(until, entry[1])
                continue
            p = program(req)
            raw = base[req.id] + call_service[req.id] if atlas else service[p]
            disc = discount.get(p, 0.0)
            level = bisect_right(thresholds, max(raw - disc, 0.0))
            if level != keys[req] >> LEVEL_SHIFT:
                return -inf, 0  # (a key not up to date: do not repeat)
            if level < len(thresholds):
                gap_s = (thresholds[level] + disc - raw) / (1 if atlas else calls[p])
                until = min(until, due_after(start, gap_s))
        return until, UNLIMITED_STEPS
