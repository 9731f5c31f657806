"""FastSwitch: fairness-driven preemptive scheduling with cheap KV context switches.

Shen, Li, Gao, "FastSwitch: Optimizing Context Switching Efficiency in Fairness-aware LLM
Serving" (arXiv 2411.18424), scheduling.md §4.2. The policy is a preemptive priority
scheduler whose priorities follow fairness: every `priority_update_interval` scheduling steps
the priority of each request is refreshed from its tenant's Virtual Token Counter (weighted
service: `input_price` per prompt token computed, `output_price` per generated token; a
tenant that returns from idle is lifted to the smallest active counter, as in VTC). Each step
walks running, swapped and waiting requests in priority order (tenant counter, then arrival)
and serves them while the token budget, `max_num_seqs` and KV blocks allow; when a request
does not fit, running requests of lower priority are swapped out to make room.

What the paper is about is the cost of those switches; three mechanisms, each a parameter so
that they can be switched off one by one (all off = vLLM v0 swapping):
1. block groups: KV is allocated in runs of contiguous blocks, so a swap copies whole groups
   (`block_group_size` blocks per copy and layer) instead of one 16-token block per copy;
2. asynchronous swaps overlapped with compute (`overlap_swap`): the step does not wait; a
   swapped-in request is scheduled once its copy is done;
3. KV reuse (`reuse_cpu_kv`): a request keeps its CPU copy after a swap-in, and a finished
   turn's copy is kept for its conversation (session or program), so the next swap-out moves
   only the blocks computed since. CPU copies are reclaimed oldest first when room is needed.
The paper's group-size policy is dynamic (split/merge); here every request's blocks form
groups of `block_group_size` (an upper bound on contiguity). Blocks being swapped out are
reusable at once (the paper waits for the copy): a simplification.

The fairness bookkeeping (counters, snapshot, lift, held requests, `_key`) is
`FastSwitchFairness`'s (`fastswitch_fairness.py`); the fast-forward answers are
`FastSwitchStretches`' (`fastswitch_stretches.py`).
"""

from __future__ import annotations

from functools import partial
from itertools import compress, count, islice, repeat
from operator import attrgetter, is_not

from pydantic import Field

from servesim.replica.schedulers import register
from servesim.replica.schedulers.base import SchedulerOutput, SchedulerParams
from servesim.replica.schedulers.fastswitch_fairness import FastSwitchFairness, integral_prices
from servesim.replica.schedulers.fastswitch_stretches import FastSwitchStretches
from servesim.replica.schedulers.outputs import append_decodes, one_token_each
from servesim.replica.schedulers.queues import ARRIVAL_ID, REQUEST_ID
from servesim.replica.schedulers.vllm_steps import VLLMSteps
from servesim.replica.swap import SwapMechanics
from servesim.workload.request import Request, RequestState

_ARRIVAL_S = attrgetter("arrival_s")
_STATE = attrgetter("state")
RUNNING = RequestState.RUNNING


def _latest(reqs: list[Request]) -> Request | None:
    """`max(reqs, key=ARRIVAL_ID, default=None)`, from the arrival times alone where one
    request has the latest (the usual case): no key tuple per request, half the time (an
    eviction beside 100 running requests under overload)."""
    arrivals = list(map(_ARRIVAL_S, reqs))
    if not arrivals:
        return None
    last = max(arrivals)
    i = arrivals.index(last)
    if last not in arrivals[i + 1:]:  # (one scan past the max where `count` made a second)
        return reqs[i]
    return max(reqs, key=ARRIVAL_ID)


class FastSwitchParams(SchedulerParams):
    priority_update_interval: int = Field(100, ge=1)
    """Scheduling steps between priority refreshes (the paper varies this frequency; 100 is
    an assumption, TODO(verify))."""
    input_price: float = Field(1.0, ge=0.0)
    """Counter weight of a prompt token (VTC w_p)."""
    output_price: float = Field(2.0, ge=0.0)
    """Counter weight of a generated token (VTC w_q)."""
    block_group_size: int = Field(32, ge=1)
    """Blocks per contiguous group, i.e. per swap copy (the paper: dynamic, up to tens)."""
    overlap_swap: bool = True
    """Run swaps asynchronously, overlapped with compute (False: the step waits, vLLM v0)."""
    reuse_cpu_kv: bool = True
    """Keep CPU copies across swap-ins and turns; swap out only what is new."""


def context_key(req: Request):
    """The conversation a request continues (its KV prefix is the previous turn's), if any."""
    if req.session_id is not None:
        return ("session", req.session_id)
    if req.program_id is not None:
        return ("program", req.program_id)
    return None


@register("fastswitch")
class FastSwitchScheduler(FastSwitchStretches, FastSwitchFairness, VLLMSteps):
    Params = FastSwitchParams
    # An arrival does not read a finish a stretch has not processed yet (`arrival_reads_finishes`
    # stays False, so a closed loop's follow-ups are told inside stretches through finishes):
    # `add_request` reads the tenants' held counts, which such a finish lowers, only while
    # counting is deferred, and a stretch through finishes starts by counting everything and
    # not deferring (`fast_forward`) until its end; the VTC lift reads them at the next
    # `schedule`, after the stretch applied its finishes, or at a join (`join`, `before_join`)
    # only with one tenant held, whose lift changes nothing (no other counter to lift it to).
    may_swap = True  # (it preempts by swap while the CPU tier has room)

    def __init__(self, params, config, kv, perf) -> None:
        super().__init__(params, config, kv, perf)
        self.swap_mechanics = SwapMechanics(blocks_per_copy=params.block_group_size, overlap=params.overlap_swap)
        self.counters: dict[str, float] = {}  # tenant -> weighted service (live)
        self._snapshot: dict[str, float] = {}  # tenant -> counter at the last refresh
        self._served: dict[int, tuple[int, int]] = {}  # req id -> (prompt tokens, outputs) counted
        self._snap_step = -1  # engine step at whose start the snapshot was taken
        self._sched_step = 0
        self._arrival_order = False  # `_order` was arrival order this step (every counter equal)
        self._held: dict[str, int] = {}  # tenant -> requests held (running, swapped, waiting)
        self._arrived: dict[str, int] = {}  # tenant -> requests arrived since the last step (`_lift`)
        # every held request in arrival order (`_order` when all counters are equal), kept
        # as requests come and go instead of sorted at every step
        self._arrival_keys: list[tuple[float, int]] = []
        self._by_arrival: list[Request] = []
        # counting deferred while one tenant is held (`FastSwitchFairness`: deferred counting)
        self._defer_prices = integral_prices(params.input_price, params.output_price)
        self._deferred = False
        self._unscheduled: set[int] = set()  # transferred requests not scheduled yet
        # the waiting request at which this step's admission stopped, if it waits for KV blocks
        # or a sequence slot until a finish (`_note_blocked`), else None
        self._blocked_head: Request | None = None
        self._chunk_prompt: Request | None = None  # the prompt of the step `repeats_chunk` said yes to

    # ---- the decision ----------------------------------------------------------------
    def schedule(self, now_s: float) -> SchedulerOutput:
        self._refresh_priorities()
        self._blocked_head = None
        out = SchedulerOutput()
        budget = self.config.max_num_batched_tokens
        order = self._order()
        swapped_now: set[int] = set()
        admitting = True  # new and swapped requests join in priority order until one does not fit
        running_left = len(self.running)  # running requests not reached yet (a victim when reached)
        first = self._decodes_from(order, 0, budget)  # (the walk's first steps, nothing admitted between)
        if first:
            out.known_decodes = known = order[:first]
            out.scheduled = one_token_each(known)
            out.num_known_decodes = first
            budget -= first
            running_left -= first
        i, walked_to = first - 1, first  # (order[first] is not taken in bulk: the prefix stopped there)
        while (i := i + 1) < len(order):
            req = order[i]
            if req.state == RequestState.RUNNING:
                if i >= walked_to and budget > 0 and (k := self._decodes_from(order, i, budget)):
                    append_decodes(out, order[i:i + k])
                    budget -= k
                    running_left -= k
                    i += k - 1
                    walked_to = i + 2  # (the next stopped the bulk call: the walk's, one by one)
                else:
                    running_left -= 1
                    if budget > 0:
                        budget -= self._run_one(req, budget, out, swapped_now, now_s)
            elif req.id in swapped_now:  # (a lower priority swapped out to make room: running when the walk began)
                running_left -= 1
            elif not admitting:
                if running_left <= 0:
                    break  # only waiting and swapped requests are left, and none may join
            elif (left := self._admit_one(req, budget, out, swapped_now)) is None:
                admitting = False
            else:
                budget = left
        return out

    def _refresh_priorities(self) -> None:
        """Lift the tenants that arrived since the last step, and take the counters' snapshot
        the walk orders by every `priority_update_interval` steps."""
        if self._arrived:
            self._lift()
        step = self.num_engine_steps
        if step % self.params.priority_update_interval == 0 and step != self._snap_step:
            self._count_all()
            self._snapshot = dict(self.counters)
            self._snap_step = step
        self._sched_step = step

    def _run_one(self, req: Request, budget: int, out: SchedulerOutput, swapped_now: set[int], now_s: float) -> int:
        """Schedule running `req`'s next tokens, lower priorities giving way (itself swapped out
        if none is left); the tokens scheduled (0: none, its swap-in still in flight)."""
        if self.swap_ready_s and not self.is_swap_ready(req, now_s):
            return 0
        n = self.tokens_for(req, budget)
        if n <= 0:
            return 0
        allocate = self.kv.allocate_slots
        if not allocate(req, n):  # (the usual case allocates at once, without making room)
            make_room = partial(self._make_room, req, swapped_now)
            if not self._fit(lambda: allocate(req, n), make_room, out):
                self._evict(req, out, swapped_now)  # nothing of lower priority left: itself
                return 0
        out.scheduled.append((req, n))
        return n

    def _admit_one(self, req: Request, budget: int, out: SchedulerOutput, swapped_now: set[int]) -> int | None:
        """Admit waiting or swapped `req`, lower priorities giving way; the budget left, or None
        where admission stops at it."""
        make_room = partial(self._make_room, req, swapped_now)
        if len(self.running) >= self.config.max_num_seqs:
            self._note_blocked(req, budget)
            return None
        if req.state == RequestState.SWAPPED:
            if not self._fit(lambda: self.swap_in_room(req) >= 0, make_room, out):
                return None
            overlap = self.swap_mechanics.overlap  # a sync copy is done before the step
            budget -= self.resume(req, out, 0 if overlap else min(budget, 1), self.params.reuse_cpu_kv)
            if overlap:
                self.swap_ready_s[req.id] = float("inf")  # until the engine reports the copy's end
            return budget
        if budget > 0 and (left := self.admit(req, budget, out, make_room)) is not None:
            return left
        if budget > 0:
            self._note_blocked(req, budget)
        return None

    def walks(self) -> bool:
        """Does `schedule` walk as this class's does (the fast-forward answers assume it)?"""
        return type(self).schedule is FastSwitchScheduler.schedule

    def _note_blocked(self, req: Request, budget: int) -> None:
        """Admission stopped at waiting `req` for blocks (no lower priority to swap out) or a
        sequence slot. Without prefix keys its need is fixed, and decode steps only take
        blocks, so it waits until a finish (`fast_forward`, `finish_admits`)."""
        if req.state == RequestState.WAITING and not req.kv_block_keys and self.first_chunk(req, 0, budget) > 0:
            self._blocked_head = req

    def _decodes_from(self, order: list[Request], i: int, budget: int) -> int:
        """`allocate_leading_decodes` over the running requests from `order[i]` on, up to the
        first that is not running or whose swap-in may be in flight (`swap_ready_s`: the
        walk asks `is_swap_ready`, which forgets a copy done; for the others it answers yes
        and changes nothing), within the budget: how many got their token (in C but for the
        bulk call: the run's end found by iterators, not a Python loop)."""
        # (states are the enum's members: `is_not` a plain C function of two, where the member's
        # bound `__ne__` took a wrapper call and the int comparison per request, about 40 % more)
        states = map(is_not, map(_STATE, islice(order, i, i + budget)), repeat(RUNNING))
        end = next(compress(count(i), states), min(len(order), i + budget))
        if (ready := self.swap_ready_s) and end > i:
            end = next(compress(count(i), map(ready.__contains__, map(REQUEST_ID, islice(order, i, end)))), end)
        return self.kv.allocate_leading_decodes(order[i:end]) if end > i else 0

    def _order(self) -> list[Request]:
        """Every held request in priority order (`_key`). When all their tenants have the
        same counter (one tenant, say) that is arrival order, kept between steps."""
        self._arrival_order = len({self._key_counter(t) for t in self._held}) <= 1  # (read by `_make_room`)
        if self._arrival_order:
            return self._by_arrival.copy()
        return sorted([*self.running, *self.swapped, *self.waiting], key=self._key)

    def _key_counter(self, tenant: str) -> float:
        return self._snapshot.get(tenant, self.counters.get(tenant, 0.0))

    def _fit(self, try_allocate, make_room, out: SchedulerOutput) -> bool:
        """Run `try_allocate`, making room, until it succeeds (False: no room can be made)."""
        while not try_allocate():
            if make_room(None, out) is None:
                return False
        return True

    def _make_room(self, at: Request, swapped_now: set[int], req, out: SchedulerOutput) -> int | None:
        """Swap out the lowest-priority running request after `at` in the step's order (None
        if none is). The order is `_key`'s, fixed during the walk; requests admitted in it
        come before `at`."""
        key = self._key
        at_key = key(at)
        if self._arrival_order:  # every held request's counter is the same: keys go by arrival
            victim = _latest(self.running)  # (in C: no `_key` per request)
            if victim is None or key(victim) <= at_key:
                return None
        else:
            victims = [r for r in self.running if key(r) > at_key]
            if not victims:
                return None
            victim = max(victims, key=key)
        self._evict(victim, out, swapped_now)
        return 0  # lower-priority requests come later in the walk: none was scheduled yet

    def _evict(self, victim: Request, out: SchedulerOutput, swapped_now: set[int]) -> None:
        """Swap a running request out (recompute if the CPU tier is full)."""
        swapped_now.add(victim.id)
        self.evict(victim, out, swap=True, reuse_key=context_key(victim) if self.params.reuse_cpu_kv else None)

    def finish(self, req: Request, now_s: float) -> None:
        super().finish(req, now_s)
        key = context_key(req) if self.params.reuse_cpu_kv else None
        if key is not None:  # keep the turn's CPU copy for the conversation's next turn
            self.kv.retain_cpu_copy(req.id, key, (req.prompt_len + req.output_len) // self.kv.block_size)
        else:
            self.kv.free_cpu(req.id)
