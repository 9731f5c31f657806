"""Fast-forward: an engine step and the decode-only steps that repeat it, as one event.

When the scheduler says the next steps would repeat the batch (`Scheduler.fast_forward`), the
engine plans a `Stretch` (see `replica/stretch.py`), prices it up to the next event that may
concern this replica, and applies all its steps when it ends: the requests' tokens, their KV
blocks and the step log, exactly as stepping one by one would have left them. A request
arriving here cuts the stretch (`Engine.interrupt`); a stretch whose end is reached uncut is
extended. This part of the engine is a mixin of `Engine`, kept apart because it is the
subtle part: everything here must stay bit-identical to stepping (tests/replica/test_fast_forward.py,
tests/cluster/test_exactness.py, tests/golden).
"""

from __future__ import annotations

import math

import numpy as np

from servesim.core.loop import PRIO_STEP_END
from servesim.replica.admission_stretch import AdmitStretch
from servesim.replica.finish_admission import admission_fast_forward, admit_at_finishes
from servesim.replica.block_keys import keyed_pairs
from servesim.replica.chunk_stretch import ThroughChunkStretch
from servesim.replica.finish_notices import schedule_notice
from servesim.replica.finish_order import policy_rank
from servesim.replica import policy_stops
from servesim.replica.keyed_join import keyed_join, with_keys
from servesim.replica.schedulers.base import FastForward, SchedulerOutput
from servesim.replica.spec_stretch import SpecStretch
from servesim.replica.stretch import DecodeFn, DecodeForms, Stretch
from servesim.replica.stretch_chunks import RunTimes
from servesim.replica.stretch_apply import StretchApply
from servesim.replica.stretch_join import join_arrivals
from servesim.workload.request import Request

INF = math.inf


# Stretches whose departures are told at their times on a closed-loop workload (`schedule_notice`)
_NOTICED = (Stretch, ThroughChunkStretch)


class DecodeFns(dict):
    """The perf model's scalar decode step time functions by batch size, made on first use
    (`PerfModel.decode_time_fn`, False where it has none), and its affine decode forms by batch
    size (`forms`, `FastForwarding._decode_forms`). The engines of a pool share one
    (`simulation._add_replica`): the same floats, made once instead of once a replica."""

    __slots__ = ("perf", "forms")

    def __init__(self, perf) -> None:
        super().__init__()
        self.perf = perf
        self.forms: DecodeForms | bool | None = None  # (False: the model has no affine form)

    def __missing__(self, n: int):
        f = self[n] = self.perf.decode_time_fn(n) or False
        return f


class FastForwarding(StretchApply):
    """The fast-forward methods of `Engine` (which holds the state they use); the apply of a
    stretch's steps is `StretchApply`'s (`replica/stretch_apply.py`)."""

    __slots__ = ()  # (`Engine` holds the state in its slots)

    def _fast_forward(self, now_s: float, out: SchedulerOutput, decodes: list[Request], decode_ctxs: list[int],
                      prefills: list[tuple[Request, int]], ff: FastForward, dt0_s: float) -> bool:
        """Run this step and the decode-only steps that repeat it as one event (a `Stretch`).

        Step 0 is the scheduled step itself: decodes, plus prompt chunks that finish their
        prompts (those requests emit their first token and decode from step 1 on). Every later
        step gives every request still running one token. The stretch stops before anything
        could change that: an arrival here (`cut`), a policy timer, the step that would run out
        of KV blocks, and the first finish — unless finishes can be processed late (nothing
        reacts to them, no prefix keys, and a scheduler that stays steady when requests leave),
        in which case requests leave the batch at their last step and their finish is recorded
        at its time. Returns False, changing nothing, if fewer than two steps would be safe.
        Step times come from the perf model's scalar decode form, one call per step, so nothing
        scales with tokens. `dt0_s`: the time of step 0 (priced by the caller).
        """
        if prefills:
            for req, n in prefills:
                if n != req.prompt_len + req.num_output_tokens - req.num_computed_tokens:
                    return False  # a prompt still in progress gets a chunk, not one token, next step
        end0 = now_s + dt0_s
        if not ff.through_timers:
            timers = None
            horizon_s = self._stretch_horizon_s(now_s, end0)
            if horizon_s <= end0:
                return False  # step 1 would start at or after the horizon: `price` would take no step
        if prefills:
            reqs = decodes + [req for req, _ in prefills]
            # contexts after step 0 (the tokens in KV when step 1 starts)
            ctx1 = [c + 1 for c in decode_ctxs] + [req.num_computed_tokens + n for req, n in prefills]
        else:
            reqs, ctx1 = decodes, [c + 1 for c in decode_ctxs]
        remaining = [req.output_len - req.num_output_tokens for req in reqs]  # tokens to emit, step 0 included
        kv = self.kv
        if kv.through_in_order:
            # SGLang's radix cache: a decode registers nothing (no `keyed` pairs to plan), and a
            # finish that inserts keys, or evictable tree blocks, has the stretch applied in step
            # order (`replica/ordered_frees.py`)
            keyed = []
            keys = not all(r.kv_block_keys is None for r in reqs)
            in_order = keys or bool(kv.evictable_blocks)
        else:
            keyed = keyed_pairs(reqs, ctx1)
            keys, in_order = bool(keyed), False
        through = self._through_finishes(ff, keyed, in_order)
        if ff.through_timers:  # (the policy's timers it may run through: `replica/policy_stops.py`)
            timers = self.scheduler.stretch_timers() if through else None
            horizon_s = self._stretch_horizon_s(now_s, end0, timers)
            if horizon_s <= end0:
                return False
        if (not (through or keys) and self.defer_finishes and self.notice is None and self.ports is None
                and self.scheduler.num_waiting and self.scheduler.finish_admission()):
            # (finishes admit the queue head inside the stretch)
            return admission_fast_forward(self, now_s, end0, horizon_s, out, decodes, prefills, reqs, ctx1, remaining,
                                          ff.max_steps)
        if ff.admissions_only:
            return False  # (a plain stretch would miss the steps at which the policy admits)
        if (max(remaining) if through else min(remaining)) < 2:
            return False
        st = Stretch(now_s, end0, out, decodes, prefills, reqs, ctx1, remaining, through, self._decode_fn,
                     self.perf, self.scheduler.num_waiting, self._decode_forms, keyed)
        if through and keyed:
            st.keyed_last = [r.output_len - r.num_output_tokens - 1 for r, _ in keyed]
        st.in_order = through and in_order
        if through and ff.finish_timer_s != INF:  # (finishes that pin: blocks kept, a timer after each)
            st.kept = (self.scheduler.keeps_blocks, ff.finish_timer_s, self.scheduler.finish_timer_key)
            st.own_pins = {}
        st.timers = timers
        if prefills:
            st.rank = policy_rank(self.scheduler, out, reqs, len(decodes))
        if ff.max_steps < st.kmax:  # (the policy decides otherwise after that many steps)
            st.kmax = ff.max_steps
        if self.join_ahead and through:
            # (a replica among many, whose horizon is a guess `lookahead` arrival gaps away: the
            # scalar loop `join_ahead` steps on from step 1's state, as after a join, not a numpy
            # chunk to it; the stretch's end extends it as far again while nothing happens here)
            st._sync()
            st.price_on(horizon_s, self.join_ahead)
        else:
            st.price(horizon_s)
        if st.k < 2:
            return False
        return self._launch(st, reqs, ctx1)

    def _through_finishes(self, ff: FastForward, keyed: list, in_order: bool = False) -> bool:
        """May the stretch run through finishes, processed late? Where the policy's answer `ff`
        allows, with prefix keys (`keyed`) only with the vLLM cache, whose frees and
        registrations commute with the stretch's pops (each request registers up to its own last
        step and its finish's frees are counted by reference: `freed_blocks`), or applied in
        step order (`in_order`: SGLang's radix cache, with keys or evictable tree blocks,
        `replica/ordered_frees.py`; not while the cache is read from outside, which would see
        the tree without the finishes' inserts). With a closed-loop workload each finish is told
        at its time (`notice`), unless the scheduler's `add_request` reads what finishes change:
        then follow-ups could arrive before the finish they depend on is processed, and
        stretches stop at finishes."""
        if in_order:
            allowed = not self.cache_read_outside
        else:
            allowed = not keyed or self.keyed_through
        return self.defer_finishes and ff.through_finishes and allowed and not (
            self.notice is not None and self.scheduler.arrival_reads_finishes)

    def _launch(self, st: Stretch, reqs: list[Request], ctx1: list[int]) -> bool:
        """Put the new stretch `st` (priced, of `reqs` with contexts `ctx1` at step 1) in flight,
        limited to the KV blocks free; False, changing nothing, if fewer than two steps remain."""
        # KV: step j >= 1 needs room for ctx1 + j tokens. first_new: the first step that needs
        # one more block for a request; it needs another every block_size steps after that,
        # until its last step (remaining - 1). Freed blocks are not counted on: allocations must
        # fit in the blocks free now, which also keeps the free queue's order exact.
        st.first_new = self.kv.first_new_block_steps(reqs, ctx1)
        st.free_blocks = self.kv.num_free_blocks
        if not self._limit(st, 1):
            return False
        self.stretch = st
        self._schedule_stretch_end(st)
        return True

    def _stretch_horizon_s(self, now_s: float, end0_s: float, timers: list | None = None) -> float:
        """How far to price a stretch whose step starting at `now_s` ends at `end0_s`.

        A lone replica knows the next arrival is its own: price exactly up to it (and give up
        below two steps). With others the next arrival may go elsewhere, and a queue blocked
        for any newcomer keeps the stretch through arrivals: price `lookahead` times as far
        and at least one step past that one; a submission here that the scheduler cannot keep
        cuts the stretch back to the step in flight, and `_end_fast_forward` extends it if
        reached uncut (or lets the newcomers join it)."""
        next_s = self.next_event_s()
        if self.lookahead > 1 or self.arrival_keeps(False, None):  # (a decode stretch's)
            a, b = now_s + (next_s - now_s) * self.lookahead, math.nextafter(end0_s, math.inf)
            next_s = b if b > a else a
        own = self._own_horizon_s(timers)
        return own if own < next_s else next_s

    def _schedule_stretch_end(self, st: Stretch) -> None:
        """(Re)schedule the event that applies the stretch; any earlier one becomes void."""
        st.gen += 1
        if self.sole_arrival is not None and self.loop.next_is(self.sole_arrival, st.end_s):
            self._unevented = (st, st.gen)  # the next event is an arrival here, at or before the end
            return
        self.loop.schedule(st.end_s, self._end_fast_forward, (st, st.gen), PRIO_STEP_END)
        if self.notice is not None and st.through and type(st) in _NOTICED:
            schedule_notice(self, st)  # (its finishes' follow-ups at their times, this stretch's way)

    def _settle(self) -> None:
        """An arrival (the loop's event in flight) was the next event when the stretch got no
        end event (`sole_arrival`), and the stretch is cut, joined or kept as it decided: the end
        comes next if no event lies at or before it, and is handled here as the loop would (its
        clock set to it: nothing else can happen before); else it is left to the next arrival
        if that comes first, or scheduled. The same handlers at the same times in the same order
        as with the event (exact: the loop holds nothing else that could come in between)."""
        st, gen = self._unevented
        self._unevented = None
        if gen != st.gen:
            return  # (rescheduled or ended since)
        loop = self.loop
        end_s = st.end_s
        if loop.next_time_s() > end_s:
            if end_s <= self.until_s:  # (past the run's end the loop would not reach it)
                loop.now_s = end_s
                return self._end_fast_forward(end_s, (st, gen))
        elif loop.next_is(self.sole_arrival, end_s):
            self._unevented = (st, gen)  # (the next arrival comes first and settles it)
            return
        loop.schedule(end_s, self._end_fast_forward, (st, gen), PRIO_STEP_END)

    def _cut(self, now_s: float) -> None:
        """Something changes here at `now_s` that the scheduler must see: keep only the steps
        of the stretch in flight that started before it."""
        if self.stretch is not None and self.stretch.cut(now_s):
            self._schedule_stretch_end(self.stretch)

    def _limit(self, st: Stretch, k_safe: int) -> bool:
        """Shorten the stretch to the steps whose KV blocks fit in the free ones and whose
        prefix keys register as stepping would (the first `k_safe` steps are known to be fine).
        False if fewer than two steps remain."""
        if self.scheduler.reorders_running or st.kept is not None:  # (no call for the others)
            policy_stops.limit(st, self.scheduler, self.notice is not None, k_safe)
        if not (st.first_new or st.keyed or st.grows):
            return st.k >= 2  # (nothing grows: a `SpecStretch` limits itself; a vLLM chunk stretch's prompt grows)
        bs = self.kv.block_size
        k = st.k
        free = st.free_blocks - st.join_blocks  # (prompts that joined took theirs before step k_safe)
        need = st.blocks_needed

        # (cheap bound first: each request that may still grow needs at most one block per
        # block_size steps since the last count, + 1)
        if st.blocks_bound(k, bs) > free and need(k, bs) > free:
            lo, hi = k_safe, k  # need(lo) <= free < need(hi)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if need(mid, bs) <= free else (lo, mid)
            st.truncate(lo)
            st.final = st.limited = True
            k = lo
        if st.keyed and k > k_safe and self.kv.keys_conflict_many(st.keyed, k - 1, st.keyed_last, self.keyed_joins):
            if st.keyed_last is not None:
                # Through finishes the keys reach far: keep the steps whose registrations do
                # not conflict (fewer steps register a subset), and plan those (the last check)
                lo, hi = k_safe, k
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    lo, hi = (lo, mid) if self.kv.keys_conflict_many(st.keyed, mid - 1, st.keyed_last) else (mid, hi)
                if lo > k_safe and self.kv.keys_conflict_many(st.keyed, lo - 1, st.keyed_last):
                    raise AssertionError("a subset of conflict-free registrations conflicts")
                k_safe = lo
            st.truncate(k_safe)
            st.final = st.limited = True
        return st.k >= 2

    def _own_horizon_s(self, timers: list | None = None) -> float:
        """The next time this replica changes by itself: a policy timer or the end of the run
        (`timers`: a stretch's that it runs through, `Stretch.timers`: the first it does not)."""
        t = self.scheduler.next_timer_s() if timers is None else timers[0]
        return t if t < self.until_s else self.until_s

    def _decode_forms(self, n: int) -> DecodeForms | None:
        """The perf model's affine decode forms for batch sizes 0..n (at least), as arrays
        indexed by batch size, extended on demand (None: the model has no affine form)."""
        fns = self.decode_fns
        forms = fns.forms
        if forms is False:
            return None
        if forms is not None and len(forms[0]) > n:
            return forms
        affine = getattr(self.perf, "decode_affine", None)
        first = affine(max(n, 1)) if affine else None
        if first is None:
            fns.forms = False
            return None
        size = max(2 * n, 64) + 1
        coeffs = [(0.0, 0.0)] + [affine(k)[::2] for k in range(1, size)]  # (base, cpu) per batch size
        base, cpu = (np.array(col, dtype=float) for col in zip(*coeffs))
        fns.forms = (base, cpu, first[1], first[3], RunTimes(base, cpu, first[1], first[3]))
        return fns.forms

    @property
    def _decode_fn(self) -> DecodeFn:
        """The perf model's scalar decode step time for n sequences, memoised (False: none):
        n -> function, the memo's own `__getitem__` (a stretch asks it at each join and
        departure; a C call once the batch size was seen)."""
        return self.decode_fns.__getitem__

    def settle_before(self, now_s: float) -> None:
        """Apply the steps of the stretch in flight that ended before `now_s`, and go on from
        the last one's end as stepping did there (its `schedule` at that boundary, the step in
        flight at `now_s` then run on its own or starting a stretch): the policy's own state is
        then stepping's at `now_s` (`Scheduler.settles_before`). Nothing if no step ended. The
        calls and releases of KV ports made during the step in flight wait for its end, as in
        stepping (they came after its boundary)."""
        st = self.stretch
        s = st.steps_before(now_s)
        if not s:
            return
        if not (type(st) is SpecStretch or (type(st) is Stretch and not (st.joins or st.stalls or st.rests))):
            raise AssertionError(f"a {type(st).__name__} with joins cannot be settled before an arrival")
        t = (st.ends_view if type(st) is Stretch else st.ends)[s - 1]
        st.cut(t)  # (the steps that started before t: those that ended by it)
        st.gen += 1  # (its end event is void)
        held = self.ports.set_aside() if self.ports is not None else None
        self.stretch = None
        done = self._apply_stretch(st)
        self._finish_and_continue(st.out, done, t, None, st.timers[3] if type(st) is Stretch and st.timers else None)
        if held is not None:
            self.ports.put_back(held)

    def end_stretch_now(self, st: Stretch, now_s: float) -> None:
        """End `st` at `now_s` (its caller truncated it to the step in flight): its pending end
        event is void, and the stretch is applied and the engine goes on as at that event."""
        st.gen += 1
        self._end_fast_forward(now_s, (st, st.gen))

    def _end_fast_forward(self, now_s: float, payload) -> None:
        st, gen = payload
        if gen != st.gen:
            return  # replaced by a cut or an extension
        if self.on_event:
            self.on_event()
        if not st.final and st.k < st.kmax:
            # Nothing touched this replica: extend to at least four times the stretch's span so far.
            k = st.k
            own = self._own_horizon_s(st.timers if type(st) is Stretch else None)
            a, b = self.next_event_s(), 4 * st.end_s - 3 * st.start_s
            b = b if b > a else a
            horizon = b if b < own else own
            if self.join_ahead and type(st) is Stretch and st.through:
                # A busy replica among many whose join priced a few steps ahead (its scalar state
                # kept at the last of them): as many again, from that state, rather than a numpy
                # chunk to four times the span (about 400 steps at the matrix's azure-conv cell,
                # which the next arrival routed here cut a few dozen steps on). The same floats.
                st.price_on(horizon, self.join_ahead)
            else:
                st.price(horizon)
            if st.k > k:
                self._limit(st, k)
            if st.k > k:
                return self._schedule_stretch_end(st)
        if self.on_change:  # (while the stretch is in flight: a view taken now reads its steps)
            self.on_change(now_s)
        if type(st) is AdmitStretch and admit_at_finishes(self, st, now_s):
            return  # the next departure's boundary admitted what stepping would: the stretch goes on
        if ((st.final or (type(st) is Stretch and st.held)) and self.scheduler.num_waiting
                and (keyed_join(self, st, now_s) if with_keys(self, st) else join_arrivals(self, st, now_s))):
            return  # arrivals admitted whole at this boundary: the stretch goes on with them
        self.stretch = None
        done = self._apply_stretch(st)
        self._finish_and_continue(st.out, done, now_s, None, st.timers[3] if type(st) is Stretch and st.timers else None)



