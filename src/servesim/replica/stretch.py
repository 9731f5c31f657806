"""A fast-forwarded stretch: an engine step followed by decode-only steps that repeat it.

The engine plans a stretch when the scheduler says the next steps would repeat the batch (see
`Engine`), prices its steps here and handles them as one event. A stretch is an object that
can be cut and extended, so that each replica's stretch runs to its own next event however
many other replicas share the event loop:

- `price(horizon)` sums step times one by one, exactly as stepping would, and stops before a
  step that would start at or after `horizon` or past `kmax` steps. Pricing is lazy: the
  engine prices up to the next event it knows of and extends the stretch when that event
  turned out not to concern this replica. Long runs are priced with numpy, ahead of the
  horizon, and taken into the stretch as the horizon moves.
- `cut(t)`: something happened at `t` that the scheduler must see (a request arrived): keep
  only the steps that started before `t` (the last one is in flight) and never extend again.
- `steps_before(t)`: how many steps ended before `t` (reading the replica's state at `t`).

Step j >= 1 runs every request still in the batch for one token; in `through` mode requests
leave the batch after their last token (remaining[i] steps), otherwise the stretch stops at
the first finish.

The pricing itself (`price` and the numpy and scalar paths behind it) is `StretchPricing`'s
(`replica/stretch_pricing.py`); the reads of its steps and finishes (the step log's, the views',
the routers') are `StretchViews`' (`replica/stretch_views.py`).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any, Callable, Literal

import numpy as np

from servesim.replica.block_keys import keyed_pairs
from servesim.replica.stretch_chunks import DecodeForms
from servesim.replica.stretch_joins import StretchJoins
from servesim.replica.stretch_pricing import StretchPricing
from servesim.replica.stretch_views import StretchViews

# the perf model's scalar decode step time for n sequences (ctx_sum -> seconds), or False
DecodeFn = Callable[[int], "Callable[[int], float] | Literal[False]"]


class Stretch(StretchJoins, StretchPricing, StretchViews):
    """Steps of a fixed decode batch, priced lazily; the engine applies them at `end_s`."""

    __slots__ = ("start_s", "out", "decodes", "prefills", "reqs", "ctx1", "remaining", "through", "keyed",
                 "num_waiting", "waiting_from", "first_new", "free_blocks", "kmax", "final", "gen", "k", "end_s",
                 "_decode_fn", "_forms", "_perf", "_ctx_sum", "_active", "_order", "rank", "ahead", "_sorted_rem",
                 "_p", "_f", "_ctx_total", "_prefix_sums", "_ends", "_endv", "_priced", "_step1_s", "joins", "join_blocks", "limited",
                 "_need_at", "keyed_last", "_freed", "num_noticed", "notice_at", "notice_id", "stalls", "grown",
                 "_stall_need", "prompt_runs", "join_shared", "rests", "_fin", "kept", "chain_at", "held",
                 "waiting_to", "spent_to", "timers", "in_order", "taken_back", "settled", "sessions", "own_pins",
                 "plan_at")
    grows = False  # does a prompt's chunk allocate blocks at each step? (a vLLM `ChunkStretch` sets its own)
    spends_budget = False  # do its steps spend the whole token budget on a prompt's chunks? (`Engine.arrival_keeps`)

    def __init__(self, start_s: float, end0_s: float, out: Any, decodes: list, prefills: list, reqs: list,
                 ctx1: list[int], remaining: list[int], through: bool, decode_fn: DecodeFn, perf: Any,
                 num_waiting: int, forms: Callable[[int], "DecodeForms | None"] = lambda n: None,
                 keyed: list | None = None) -> None:
        self.start_s = start_s
        self.out = out
        self.decodes = decodes
        self.prefills = prefills
        self.reqs = reqs  # decodes, then the requests whose prompts finish in step 0
        self.ctx1 = ctx1  # their contexts when step 1 starts
        self.remaining = remaining  # tokens each still emits, step 0 included
        self.through = through
        # (request, ctx1) of those with prefix keys (`keyed`: the caller's, when it made them)
        self.keyed = keyed_pairs(reqs, ctx1) if keyed is None else keyed
        self._nothing_late()
        self.num_waiting = num_waiting  # the scheduler's waiting count when step 0 was scheduled
        self.waiting_from: list[int] = []  # steps from which one more request waits (arrivals kept)
        # requests held waiting up to step `kmax`, where the policy may admit them as a prompt-only
        # step (`stretch_join._hold`: vtc's `max_wait_tokens`); the stretch's end asks then
        self.held = 0
        self.first_new: list[int] = []  # set by the engine: first step needing one more block, per request
        self.free_blocks = 0  # free KV blocks when the stretch was planned
        self._no_joins(len(reqs))
        # remaining in increasing order (`through`: the departures); the requests' order by it
        # is sorted only when a departure is priced (`departure_order`)
        self._sorted_rem = sorted(remaining) if through else None
        self._order = None
        # each request's place in the policy's order of the repeated steps where it is not the
        # order of `reqs` (`Scheduler.repeat_order`: FastSwitch's walk may list a prompt admitted
        # in step 0 before the decodes); those that joined since come after it. None: `reqs`'
        self.rank: list[int] | None = None
        self.ahead = 0  # blocks of its growth taken from the free queue before it is applied (`take_ahead`)
        self._fin = 0  # the last `finished_by` count (where the next read starts)
        self.kmax = self._sorted_rem[-1] if through else min(remaining)
        n = len(reqs)
        self._step_zero(end0_s)
        self._decode_fn = decode_fn
        self._perf = perf
        self._ctx_sum = self._ctx_total = sum(ctx1)
        self._prefix_sums = None  # ctx1 prefix sums in increasing order of remaining, made on first use
        self._step1_s = None  # an estimate of a step's time, for sizing chunks
        self._forms = forms(n)  # the affine decode forms by batch size (None: price step by step)
        # the batch of the next step for the scalar loop: size, context sum, step time function
        self._active = n
        self._p = 0
        self._f = None
        if through and self._sorted_rem[0] == 1:
            self._leave(1)  # requests whose only token is step 0's
        if self._active:
            self._f = decode_fn(self._active)

    def _nothing_late(self) -> None:
        """What a stretch through finishes or timers sets after it is built (their defaults)."""
        # `through` with prefix keys: the last step of each keyed request (remaining - 1), up
        # to which it registers its blocks; None otherwise (every one registers up to k - 1)
        self.keyed_last: list[int] | None = None
        # the kept registration plan's items and each one's index by its request's held blocks
        # (`id`), as far as they were mapped (`keyed_join._stall_keyed`: the plan grows by joins)
        self.plan_at: list | None = None
        self._freed: dict | None = None  # `freed_blocks`' answers, by request id
        # through finishes that may keep their blocks (`FastForward.finish_timer_s`): (the
        # policy's `keeps_blocks`, the timer's seconds after a finish, its `finish_timer_key`);
        # None: every finish frees. And whether each such request's blocks are its own (by id:
        # `policy_stops.first_shared_pin`)
        self.kept: tuple[Callable[[Any], bool], float, Callable[[Any], Any]] | None = None
        self.own_pins: dict[Any, bool] | None = None
        # the policy's timers it runs through (`FastForward.through_timers`): [the first timer
        # that bounds it, [(time, key, blocks)] not fired yet, [(step, blocks)] fired at a join,
        # the (step start, key) fired late, set when applied] (`replica/policy_stops.py`); None: none
        self.timers: list | None = None
        # through finishes, its growth and its finishes' releases applied in step order (SGLang's
        # radix cache: `replica/ordered_frees.py`); then no arrival joins it
        self.in_order = False

    def _step_zero(self, end0_s: float) -> None:
        """The stretch of step 0 alone, ending at `end0_s`: its end, events and notices."""
        # End times of the steps (s): the first k are the stretch's, up to `_priced` are priced
        # ahead with numpy and taken as the horizon moves. A list while the scalar loop prices
        # (short stretches: no numpy call at all), a float array from the first numpy chunk on
        # (the step log copies it as it is, never through Python floats). `_endv` is what Python
        # reads an end through, one at a time (`ends_view`): the list itself, or a memoryview of
        # the array, set wherever `_ends` is replaced.
        self._ends: list[float] | np.ndarray = [end0_s]
        self._endv: list[float] | memoryview = self._ends
        self.k = 1  # steps in the stretch
        self.end_s = end0_s  # end of its last step: when the engine applies the stretch
        self._priced = 1
        self.final = False  # cut (or limited): never extended again
        self.gen = 0  # bumped whenever the pending end event is replaced
        self.num_noticed = 0  # departures told at their times (`replica/finish_notices.py`)
        self.notice_at = 0  # the departure (its `remaining`) of the pending notice, 0: none
        self.notice_id = 0  # bumped when the pending notice is void

    def _no_joins(self, n: int) -> None:
        """The state of joins and of the block count, for a stretch of n requests (none joined)."""
        # requests admitted at a step boundary inside the stretch (`join`): (step, request,
        # prompt tokens), in admission order; their entries follow the others' in `reqs`,
        # `ctx1`, `remaining`, `first_new`, in the stretch's frame (see `join`)
        self.joins: list[tuple[int, Any, int]] = []
        self.join_blocks = 0  # the blocks their prompts took when they joined
        self.limited = False  # shortened to the KV blocks free or to the prefix keys (`Engine._limit`)
        # (a step j, blocks_needed(j), requests that may grow from step j on): `blocks_needed`'s base
        self._need_at = (0, 0, list(range(n)))
        # prompt-only steps inside the stretch (`StretchJoins.stall`: a prefill-first policy's
        # admission): (step, requests stalled in it), in step order; and the growth each
        # stalled request had before its stall, (index, first new block step, stall step)
        self.stalls: list[tuple[int, int]] = []
        self.grown: list[tuple[int, int, int]] = []
        self._stall_need: tuple | None = None  # `_need_at` just after the last stall (`blocks_needed`)
        # prompts that joined with first chunks (`replica/chunk_join.py`): (step s0, the chunks,
        # request, its blocks); steps s0, s0 + 1, ... run a chunk each beside the decodes, and
        # the request joins at s0 + len(chunks) with the rest (an entry of `joins`)
        self.prompt_runs: list[tuple[int, list[int], Any, int]] = []
        # the last of them whose chunk steps spend the whole token budget (Sarathi's: `chunk_join`):
        # (its join step, the decodes running then, their context sum, its prompt tokens computed
        # before that step, its rest), the state a newcomer's chained join prices that step from
        # (`chain_join`); None: none
        self.chain_at: tuple[int, int, int, int, int] | None = None
        # steps from which one fewer request waits (a request kept waiting, then admitted: by a
        # chained join, or held to vtc's mini-batch); a list once one is
        self.waiting_to: list[int] | tuple = ()
        # the rests of keyed prompts that joined with a first chunk (`replica/keyed_chunk_join.py`):
        # (step, index in `reqs`, the blocks it allocates then), granted when the stretch ends
        self.rests: list[tuple[int, int, int]] = []
        # (step, blocks) of keyed joiners' prefix hits that running requests held already (in
        # use before the join: `replica/held_hits.py`), or None
        self.join_shared: list[tuple[int, int]] | None = None
        # (join step, step freed, blocks) of keyed joiners' prefix hits on blocks held only by
        # requests that left before (logged free between: `held_hits.take_back`), or None
        self.taken_back: list[tuple[int, int, int]] | None = None
        # turns that left before a next turn's join and got their growth and registrations then
        # (`held_hits.settle_departed`: the apply skips them), index in `reqs` -> blocks grown; or None
        self.settled: dict[int, int] | None = None
        # (entries of `keyed` seen, session id -> its latest place there): `held_hits._latest_of`
        self.sessions: tuple[int, dict] | None = None
        # the step of the rest of a prompt whose chunks spend the budget in the steps before it
        # (`replica/chunk_rest.py`: arrivals seen before it wait, `rest_keeps_arrival`); 0: none
        self.spent_to = 0

    @property
    def ends(self) -> list[float] | np.ndarray:
        """End time of each step of the stretch (s) (an array is a view: valid until the
        stretch changes)."""
        return self._ends[:self.k]

    @property
    def ends_view(self) -> list[float] | memoryview:
        """End times of the steps for reads one at a time from Python (index below k): the list
        while the scalar loop prices, then a memoryview of the array, whose items are Python
        floats (a numpy scalar item read and converted cost about 1,000 instructions more)."""
        return self._endv

    def _take(self, stop: int) -> None:
        """The priced steps up to `stop` join the stretch."""
        self.k = stop
        self.end_s = self._endv[stop - 1]

    def take_ahead(self, kv, t: float) -> None:
        """Take from the free queue now the blocks its requests' growth takes in the steps up
        to the one in flight at `t` (stepping allocated them at each step's start, evicting
        what they popped), for a read of the cache from outside (`Replica.cached_blocks`);
        they are allocated to the requests when the stretch is applied (`ahead`)."""
        # (the decodes' growth only: a vLLM chunk stretch's prompt is allocated by its `settle`)
        need = Stretch.blocks_needed(self, self.step_in_flight(t) + 1, kv.block_size)
        if need > self.ahead:
            kv.pop_ahead(need - self.ahead)
            self.ahead = need

    def add_waiting(self, t: float) -> None:
        """A request joined the waiting queue at `t` without cutting the stretch: stepping,
        the step after the one in flight (events at `t` come before a step ending at `t`)
        would be the first to see it. That step may lie past the priced ones (the stretch
        may be extended); it is logged only if the stretch reaches it."""
        self.waiting_from.append(bisect_left(self._endv, t, 0, self.k) + 1)

    def blocks_added(self, j: int, block_size: int, blocks_held: Callable[[Any], int]) -> int:
        """KV blocks the stretch has added by step j (allocated at steps 1..j), less those of
        requests that finished before step j (`blocks_held(req)`: what each held at step 0)."""
        delta = 0
        keeps = self.kept[0] if self.kept is not None else None  # (a finish that keeps its blocks frees none)
        for req, f, r in zip(self.reqs, self.first_new, self.remaining):
            last = min(j, r - 1)  # the request's last step at or before j
            if f <= last:
                delta += (last - f) // block_size + 1
            if r <= j and not (keeps and keeps(req)):  # finished in step r - 1 < j: everything it held is free again
                delta -= blocks_held(req) + ((r - 1 - f) // block_size + 1 if f <= r - 1 else 0)
        remaining = self.remaining
        for i, f, s in self.grown:  # (growth before a stall, of those not finished by step j)
            if remaining[i] > j and f <= j:
                delta += (min(j + 1, s) - 1 - f) // block_size + 1
        for s, i, n in self.rests:  # (a finished one's `blocks_held` leaves them out too: `apply_rests`)
            if s <= j and (j < remaining[i] or (keeps and keeps(self.reqs[i]))):  # (or it keeps them: a pin)
                delta += n
        if self.timers is not None:  # (a timer fired by step j's `schedule` freed its blocks)
            for t, _, n in self.timers[1]:
                if self.timer_step(t) <= j:
                    delta -= n
        return delta

    def freed_blocks(self, kv: Any) -> Callable[[Any], int]:
        """The blocks each request's finish frees, as a function of the request (`blocks_added`'s
        `blocks_held`): all it holds, or, with prefix keys through finishes, what `free` in
        departure order adds (a prefix block another request holds stays in use until the
        last of them leaves). Nothing it reads changes while the stretch is in flight (no
        hit, release or join), so it is counted once."""
        if self.keyed_last is None and not self.in_order:
            if self.kept is not None:  # (a finish that keeps its blocks, a pin, frees none)
                keeps = self.kept[0]
                return lambda req: 0 if keeps(req) else kv.num_blocks_of(req.id)
            return lambda req: kv.num_blocks_of(req.id)
        if self._freed is None:
            self._freed = ({}, {}, 0)  # (answers by request id, `blocks_freed`'s drops, requests counted)
        return lambda req: self._freed_of(kv, req)

    def _freed_of(self, kv: Any, req: Any) -> int:
        """`freed_blocks`' answer for `req`, counting on in departure order up to it (the
        requests that do not finish in the stretch are never counted)."""
        freed, dropped, done = self._freed
        n = freed.get(req.id)
        if n is None:
            order = self.departure_order()
            stop = order.index(self.reqs.index(req), done) + 1
            batch = [self.reqs[i] for i in order[done:stop]]
            if self.kept is not None:  # (those that keep their blocks drop no reference: none freed)
                keeps = self.kept[0]
                freed.update((r.id, 0) for r in batch if keeps(r))
                batch = [r for r in batch if not keeps(r)]
            ids = [r.id for r in batch]
            freed.update(zip(ids, kv.blocks_freed(ids, dropped)))
            self._freed = (freed, dropped, stop)
            n = freed[req.id]
        return n

    def truncate(self, k: int) -> None:
        """Keep the first k steps (k >= 1); nothing priced ahead is taken any more."""
        if k < self._priced and getattr(self, "_f", None):  # (a `ChunkStretch` has none)
            # the scalar loop's state was a later step's: unwound to step k (a plain stretch
            # through finishes: a busy replica's among many, cut a few steps into the steps it
            # priced ahead), else `_sync` rebuilds it
            if type(self) is Stretch and self.through:
                self._unwind(k)
            else:
                self._f = None
        self._priced = k
        self._take(k)

    def cut(self, t: float) -> bool:
        """Keep the steps that started before `t`; True if steps were dropped."""
        self.final = True
        k, ends = self.k, self._endv
        # (an arrival usually cuts in the last step: the stretch was priced up to it. Then one
        # read settles it, where a search probes a long stretch's ends ten or so times)
        if k < 2 or ends[k - 2] < t:
            return False
        self.truncate(bisect_left(ends, t, 0, k - 2) + 1)  # (the first end at or after t is below k - 1)
        return True



