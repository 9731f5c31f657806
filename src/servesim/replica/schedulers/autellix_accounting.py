"""Autellix's accounting at each step's end: service credited, waiting time, anti-starvation
and the calls' keys (levels) brought up to date.

`AutellixScheduler` (`autellix.py`) holds the process table, the calls' hooks and the order;
this mixin owns `on_step_end`, the per-step pass over the running and waiting calls that
moves service and waiting time forward and re-keys what changed (lone calls lazily, through
step-length sums and due-time heaps), and the settling of those lazy credits. Separate because
it is the policy's one per-step pass and the bulk of its code; it shares all of the table's
state (set by `AutellixScheduler.__init__`), hence a mixin.
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from heapq import heappop, heappush
from itertools import chain, filterfalse
from math import copysign, inf
from operator import itemgetter

import numpy as np

from servesim.replica.schedulers.base import SchedulerOutput
from servesim.workload.request import Request, RequestState

WAITING, PREEMPTED, SWAPPED = RequestState.WAITING, RequestState.PREEMPTED, RequestState.SWAPPED


# A call's key is one int ordered as the tuple (level, arrival_s, id): its level above 128 bits
# of arrival time and id (`arrival_order`). The batch is sorted by the keys at every step, and
# two ints compare in one C call where two tuples took three (an overloaded batch's sort, a
# few hundred calls at every step, in about half the time).
LEVEL_SHIFT = 128
ARRIVAL = (1 << LEVEL_SHIFT) - 1  # (a key's arrival part)
_PAIR = struct.Struct(">dq").pack  # (an arrival time's float bits, above an id's 64)
# the bits flipped after packing: an id's sign bit (its two's complement read in order), and a
# float's sign bit from 0.0 on, every bit of its 64 below (a negative float's bits descend)
_FROM_ZERO, _BELOW_ZERO = 1 << 127 | 1 << 63, ((1 << 64) - 1) << 64 | 1 << 63


def arrival_order(req: Request) -> int:
    """(arrival_s, id) as an int in the same order, one 128-bit pattern: the arrival time's
    float bits (-0.0 read as 0.0, which it equals) then the id's (ids are int64s: the request
    table's), flipped where the order needs (`_FROM_ZERO`, `_BELOW_ZERO`)."""
    a = req.arrival_s + 0.0
    return int.from_bytes(_PAIR(a, req.id), "big") ^ (_FROM_ZERO if a >= 0.0 else _BELOW_ZERO)


def due_after(now_s: float, gap_s: float) -> float:
    """The earliest time a sum of step lengths from `now_s` on may reach `gap_s`: the steps add
    up to at most the time elapsed, less a margin for their floats' rounding (every lazy due
    time and order limit of the policy)."""
    return now_s + gap_s * (1 - 1e-9) - 1e-6


class StepSums:
    """Floats that every step's length is added to at the step's end, all in one numpy add:
    element-wise float64 additions round exactly as Python's, so a slot opened at `w` and
    closed k steps later holds `w + d1 + ... + dk` added left to right, as the per-step pass
    (or a `reduce` over the steps' lengths) would give, for the cost of one vector add per step
    instead of one float add per lazy call per step (waiting calls' waiting time, running calls'
    service)."""

    __slots__ = ("_acc", "_free")

    def __init__(self, capacity: int = 64) -> None:
        self._acc = np.zeros(capacity)
        self._free = list(range(capacity - 1, -1, -1))  # (free slots' values are ignored)

    def open(self, value: float) -> int:
        """A slot starting at `value` (the steps ended from now on are added to it)."""
        if not self._free:
            n = len(self._acc)
            self._acc = np.concatenate((self._acc, np.zeros(n)))
            self._free = list(range(2 * n - 1, n - 1, -1))
        slot = self._free.pop()
        self._acc[slot] = value
        return slot

    def add(self, dt: float) -> None:
        self._acc += dt

    def close(self, slot: int) -> float:
        self._free.append(slot)
        return float(self._acc[slot])

    def value(self, slot: int) -> float:
        """What `close` would return, the slot kept open."""
        return float(self._acc[slot])


class AutellixAccounting:
    """`AutellixScheduler`'s step-end pass (state set by `AutellixScheduler.__init__`)."""

    def on_step_end(self, output: SchedulerOutput, now_s: float) -> None:
        start = self._step_start_s
        dt = now_s - start
        if self._joined:
            self._joined_waits()
        served, due = self._credit(output, now_s, start, dt)
        self._run_sums.add(dt)  # (before new lazy running calls open: theirs start with the next step)
        self._wait_sums.add(dt)  # (before the due calls settle and new lazy ones open)
        self._wait_pass(served, now_s, start)
        self._rekey_running(now_s)
        if due:
            self._rekey_due(due, now_s)

    def _credit(self, output: SchedulerOutput, now_s: float, start: float, dt: float) -> tuple[set, list]:
        """Credit this step's service to the calls scheduled in it (lazy ones: by their sums, `_run_sums`);
        (the programs served, the lazy calls due: `_rekey_due` keys them after the sums' add)."""
        run_lazy, due = self._run_lazy, self._run_due
        due_now = []  # (lazy calls that may reach their next level in this step)
        while due and due[0][0] <= now_s:
            t, _, req = heappop(due)
            entry = run_lazy.get(req)
            if entry is not None and entry[1] == t:  # (else settled since, a stale entry)
                due_now.append(req)
        # (the scheduler's list of the leading decodes is `scheduled`'s first n requests, copied in C: `evict`
        # drops it when it takes one out, and the engine appends the step's other decodes to it)
        known, n = output.known_decodes, output.num_known_decodes
        if known is None:
            reqs = list(map(itemgetter(0), output.scheduled))
        else:
            reqs = known[:n]
            reqs += map(itemgetter(0), output.scheduled[n:])
        # the eager ones, in one pass (settling a missed call below leaves them as they are:
        # it was not scheduled); those left are lazy and scheduled, fewer than all lazy ones
        # only if a lazy call missed this step
        eager = list(filterfalse(run_lazy.__contains__, reqs)) if run_lazy else reqs
        idle = self._idle
        if idle:
            idle.difference_update(eager)  # (scheduled again: lazy from this step's rekey on)
        if run_lazy and len(reqs) - len(eager) < len(run_lazy):
            missed = set(run_lazy).difference(reqs)  # running, not scheduled: no credit this step
            for req in missed:
                self._settle_running(req)
            idle |= missed  # (eager while they wait: `_rekey_running` keeps them so)
        if self._told:  # (left the stretch before its end, credited then: `finish_noticed`)
            eager = list(filterfalse(self._told.__contains__, eager))
            self._told = set()  # (the stretch ends here: its finishes were processed before)
        program, service, call_service = self.program, self.service_s, self.call_service_s
        served = set()
        joined, self._joined = self._joined, {}
        for req in eager:
            p = program(req)
            served.add(p)
            # a call that finished inside a stretch running through finishes was served until then
            if joined and req in joined:  # served from the start of the step it joined
                d = (now_s if req.finish_s is None or req.finish_s >= now_s else req.finish_s) - req.first_scheduled_s
            else:
                d = dt if req.finish_s is None or req.finish_s >= now_s else req.finish_s - start
            service[p] += d
            call_service[req.id] += d
        return served, due_now

    def _joined_waits(self) -> None:
        """The waiting time of the lone calls that joined the stretch in flight: stepping's pass
        at the end of the step they arrived in adds the time from their arrival to its end (the
        join step's start), to a program of theirs alone."""
        wait, program = self.wait_s, self.program
        for req, queued_s in self._joined.items():
            p = program(req)
            wait[p] = wait[p] + (req.first_scheduled_s - queued_s)

    def _wait_pass(self, served: set, now_s: float, start: float) -> None:
        """Waiting time and anti-starvation (`attained_s` inlined: this runs over the queue)."""
        program, service, call_service = self.program, self.service_s, self.call_service_s
        atlas = self.params.mode == "atlas"
        ratio = self.params.starvation_ratio
        wait, discount, queued, base = self.wait_s, self.discount_s, self._queued_s, self.call_base_s
        keys, fresh, lazy = self._keys, self._fresh_key, self._lazy
        due, open_sum = self._due, self._wait_sums.open
        settled = []
        while due and due[0][0] <= now_s:  # may reach their promotion in this step: eager again
            t, _, req = heappop(due)
            entry = lazy.get(req)
            if entry is not None and entry[1] == t:  # (else settled since, a stale entry)
                self._settle(req)
                settled.append(req)
        # (lazy calls are credited with this step's `dt` when they stop waiting: skipped)
        eager = self._eager_lone_calls(settled)
        moved = {}  # waiting calls whose key changed -> their old keys (their places in the queue, after the pass)
        for req in eager if eager is not None else filterfalse(lazy.__contains__, chain(self.waiting, self.swapped)):
            p = program(req)
            if p in served:  # served (its service grew) or promoted: its calls' keys change
                k = fresh(req)
                if k != (was := keys[req]):
                    keys[req] = k
                    if req.state is not SWAPPED:
                        moved.setdefault(req, was)
                continue
            served.add(p)  # a program's waiting time grows once per step
            # from the step's start, or from when the call arrived or was preempted if later
            q = queued.get(req.id, 0.0)
            w = wait[p] = wait[p] + (now_s - max(start, q))
            raw = base[req.id] + call_service[req.id] if atlas else service[p]
            attained = max(raw - discount.get(p, 0.0), 0.0)
            if attained > 0 and w >= ratio * attained:
                discount[p] = discount.get(p, 0.0) + attained  # promote
                wait[p] = 0.0
                k = fresh(req)
                if k != (was := keys[req]):
                    keys[req] = k
                    if req.state is not SWAPPED:
                        moved.setdefault(req, was)
                attained = max(raw - discount[p], 0.0)
            if req.program_id is None and req.session_id is None:  # a lone call: lazy from now
                if attained == 0:
                    lazy[req] = (open_sum(wait[p]), inf)  # cannot be promoted before it is served
                else:
                    # The step lengths to come add up to at most the time elapsed (up to float
                    # rounding: the margin), so it cannot be promoted before then.
                    t = due_after(now_s, ratio * attained - w)
                    lazy[req] = (open_sum(wait[p]), t)
                    self._due_seq += 1
                    heappush(due, (t, self._due_seq, req))
        self.waiting.rekeyed(moved, keys)

    def _eager_lone_calls(self, settled: list) -> list | None:
        """The waiting and swapped calls that are not lazy, when all are lone calls: those
        queued since the last pass (`_entered`) and those due now (`settled`); every lone call
        the pass sees becomes lazy, and lone calls share no state, so the pass may take them
        in any order instead of walking the whole queue. None (walk the queue in order) if a
        call of a program or session waits eagerly, or the count does not add up."""
        lazy, queued = self._lazy, (WAITING, PREEMPTED, SWAPPED)
        calls = [r for r in dict.fromkeys(chain(self._entered, settled)) if r not in lazy]
        self._entered = {}
        if len(calls) != len(self.waiting) + len(self.swapped) - len(lazy):
            return None
        for r in calls:
            if r.program_id is not None or r.session_id is not None or r.state not in queued:
                return None
        return calls

    def _rekey_running(self, now_s: float) -> None:
        """Keys of the running calls served eagerly, or of a promoted program; lone ones
        become lazy until their service may reach the next threshold."""
        program, service, call_service = self.program, self.service_s, self.call_service_s
        atlas = self.params.mode == "atlas"
        base, discount, keys, run_lazy = self.call_base_s, self.discount_s, self._keys, self._run_lazy
        thresholds, held, lazy_turn = self.thresholds, self._calls_held, self._lazy_turn
        open_sum, idle = self._run_sums.open, self._idle
        stand = self._idle_keyed & idle if idle else ()  # (lone, idle since the last pass: keys as they were)
        for req in filterfalse(run_lazy.__contains__, self.running):  # (`_fresh_key`, inlined)
            if stand and req in stand:
                continue
            p = program(req)
            raw = base[req.id] + call_service[req.id] if atlas else service[p]
            disc = discount.get(p, 0.0)
            x = raw - disc
            level = bisect_right(thresholds, 0.0 if 0.0 > x else x)
            k = keys.get(req)  # (None: handed over from another replica in this step, `add_transferred`)
            if k is None or k >> LEVEL_SHIFT != level:  # (mostly the same: no new int)
                keys[req] = level << LEVEL_SHIFT | (arrival_order(req) if k is None else k & ARRIVAL)
            if idle and req in idle:
                continue  # (not scheduled in this step: eager until it is, `_idle`)
            if req.program_id is None and (req.session_id is None or held.get(p) == 1):
                # nothing else moves its key: a lone call, or its session's only call held
                if req.session_id is not None:
                    lazy_turn[p] = req
                # A lone call's program has served only it: the two sums start from the same
                # float (the sign of a zero included) and add the same steps, so one slot holds
                # both (a session's later turn starts from its earlier turns' service: apart).
                s0, c0 = service[p], call_service[req.id]
                calls = -1 if s0 == c0 and copysign(1.0, s0) == copysign(1.0, c0) else open_sum(c0)
                if level >= len(thresholds):
                    run_lazy[req] = (open_sum(s0), inf, calls)
                else:
                    # its service grows by at most the time elapsed (the margin: float rounding)
                    t = due_after(now_s, thresholds[level] + disc - raw)
                    run_lazy[req] = (open_sum(s0), t, calls)
                    self._due_seq += 1
                    heappush(self._run_due, (t, self._due_seq, req))
        self._idle_keyed = {r for r in idle if r.program_id is None and r.session_id is None} if idle else frozenset()

    def _rekey_due(self, due: list, now_s: float) -> None:
        """Keys of the lazy running calls due in this step (`_credit`), read from their sums after
        this step's add, kept lazy with their next due time. Settling one, crediting it this step
        and opening its sums again (`_rekey_running`) gives the same floats: the sum read is the
        settled value plus this step's length, added once, and later steps add to it alike.
        (A due call that missed the step, or left, was settled meanwhile: passed over.)"""
        run_lazy, thresholds, keys, discount = self._run_lazy, self.thresholds, self._keys, self.discount_s
        value, program, atlas, base = self._run_sums.value, self.program, self.params.mode == "atlas", self.call_base_s
        for req in due:
            entry = run_lazy.get(req)
            if entry is None:
                continue
            slot, _, calls = entry
            raw = value(slot)
            if atlas:
                raw = base[req.id] + (raw if calls < 0 else value(calls))
            disc = discount.get(program(req), 0.0)
            x = raw - disc
            level = bisect_right(thresholds, 0.0 if 0.0 > x else x)
            if (k := keys[req]) >> LEVEL_SHIFT != level:
                keys[req] = level << LEVEL_SHIFT | k & ARRIVAL
            if level >= len(thresholds):
                run_lazy[req] = (slot, inf, calls)
            else:
                t = due_after(now_s, thresholds[level] + disc - raw)
                run_lazy[req] = (slot, t, calls)
                self._due_seq += 1
                heappush(self._run_due, (t, self._due_seq, req))

    # ---- lazy credits, settled -------------------------------------------------------
    def _settle(self, req: Request) -> None:
        """Add the steps a lazy call waited through to its program's waiting time."""
        entry = self._lazy.pop(req, None)
        if entry is not None:  # w + d1 + d2 + ... left to right, as the per-step pass adds them
            self.wait_s[self.program(req)] = self._wait_sums.close(entry[0])

    def _settle_running(self, req: Request) -> None:
        """Credit a lazy running call with the steps ended since it became lazy (its service and
        its program's: nothing else moved them meanwhile)."""
        entry = self._run_lazy.pop(req, None)
        if entry is not None:
            p = self.program(req)
            if self._lazy_turn and self._lazy_turn.get(p) is req:
                del self._lazy_turn[p]
            close = self._run_sums.close
            s = self.service_s[p] = close(entry[0])
            self.call_service_s[req.id] = s if entry[2] < 0 else close(entry[2])
