"""Pricing a `Stretch`: the end times of its decode steps, up to a horizon.

`Stretch` owns the stretch's state and what the engine reads of it (its steps, batch sizes,
cuts, counts); this mixin owns how the steps' end times are computed and stored: numpy chunks
priced ahead of the horizon from the affine decode forms (`stretch_chunks`), the scalar loop
for short runs, numpy chunks for sliding-window models, and the growing array of end times.
Separate because pricing is the one part that follows the perf model's forms; it shares the
stretch's slots (`_ends`, `_priced`, `_ctx_sum`, `_active`, ...), hence a mixin (with no
slots of its own) rather than functions.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from itertools import accumulate, compress

import numpy as np

from servesim.replica import stretch_chunks as chunks
from servesim.replica.stretch_chunks import affine_run


class StretchPricing:
    """`Stretch`'s pricing methods (state in `Stretch`'s slots)."""

    __slots__ = ()

    def _room(self, m: int) -> np.ndarray:
        """The array's free tail for m more priced steps (grown by doubling; made from the
        list on the first numpy chunk)."""
        ends, p = self._ends, self._priced
        if type(ends) is list or p + m > len(ends):
            grown = np.empty(max(2 * len(ends), p + m, 64))
            if p == 1:
                grown[0] = ends[0]  # (a new stretch's step 0: no list converted)
            else:
                grown[:p] = ends[:p]
            self._ends = ends = grown
            self._endv = memoryview(grown)
        return ends[p:p + m]

    def _append(self, ends: list[float]) -> None:
        """Steps priced by the scalar loop join the stretch."""
        if type(self._ends) is list:
            del self._ends[self._priced:]  # (what a truncation dropped)
            self._ends += ends
        else:
            p, m = self._priced, len(ends)
            if p + m > len(self._ends):
                self._room(m)
            # (through the memoryview, the floats packed by `array`: no numpy view made, no
            # conversion of a Python list; a join appends a few dozen steps this way per arrival)
            self._endv[p:p + m] = array("d", ends)
        self._priced += len(ends)
        self._take(self._priced)

    # ---------------------------------------------------------------- pricing
    def price(self, horizon: float) -> None:
        """Take steps until one would start at or after `horizon`, or `kmax` steps.

        A step's time is an affine function of the batch's context sum, with coefficients
        that depend on the batch size. With that form, long runs are priced with numpy in
        chunks that run ahead of the horizon (the same floats in the same order as stepping:
        each step's time from exact integers, then a sequential cumulative sum), so extending
        a stretch rarely prices anything. numpy's fixed cost per call pays off only over many
        steps: a few steps up to a near horizon, or models without that form, are priced one
        by one with the scalar form."""
        while self.k < self.kmax and self.end_s < horizon:
            k, p = self.k, self._priced
            if p == k:
                steps = 0  # (about how many steps reach the horizon, -1: none; only with the forms)
                if self._forms is not None:
                    steps = -1 if horizon == float("inf") else self._steps_to(horizon)
                # (a far horizon but few steps left to `kmax`, as a policy's step cap gives, e.g.
                # vtc's `max_wait_tokens` with a request waiting: the scalar loop prices them for
                # less than numpy's fixed cost per chunk; the same floats either way)
                if (steps < 0 or steps > 64) and self.kmax - k > 64:
                    self._chunk(steps)
                    p = self._priced
                elif self._f is False:
                    self._price_vectorised(horizon)
                    continue
                else:
                    if self._f is None:
                        self._sync()
                    if not self._active:
                        return
                    if self._forms is not None:
                        self._price_affine(horizon)
                    else:
                        self._price_loop(horizon)
                    continue
            # the priced steps that start before the horizon (the last may end after it)
            self._take(min(p, k + int(self._ends[k:p].searchsorted(horizon)) + 1))

    def price_lone(self, horizon: float) -> None:
        """`price` for a new stretch of one request (step 0 alone priced, 2 <= kmax <= 2^15,
        the affine forms): all its steps at once, a slice of the forms' table of one request's
        times (`RunTimes`) summed on from step 0's end, and those that start before `horizon`
        taken. The floats are those of `price`'s chunks or scalar loop, which would only price
        fewer steps ahead of the horizon (a stretch at an idle replica of many usually runs
        to its last step uncut)."""
        m = self.kmax
        ends = np.empty(m)
        ends[0] = self._ends[0]
        chunks.times_of_run(ends[1:], self._forms, 1, self._ctx_total)  # (step 1's context is ctx1)
        np.add.accumulate(ends, out=ends)  # (step 0's end, then each step's time added in order)
        self._ends = ends
        self._endv = memoryview(ends)
        self._priced = m
        self._f = None  # (as after a chunk: the scalar state is synced again if needed)
        # the steps that start before the horizon (the last may end after it)
        self._take(m if ends[m - 1] < horizon else min(m, int(ends.searchsorted(horizon)) + 1))

    def price_on(self, horizon: float, ahead: int = 0) -> None:
        """`price` from the scalar state of step k (a join just made it, `_f` set), with the
        affine forms: when the horizon lies far (a replica among many: arrival gaps away) and
        few requests leave before the last step, every step to the last is priced at once, run
        by run of a constant batch from that state (each departure found as `_leave` finds it),
        then summed on and those that start before the horizon taken, as `price_lone` does.
        `price` would hold the same floats (each run's times are `times_of_run`'s, the sums
        sequential from step k - 1's end) and only price fewer steps ahead of the horizon;
        without the prefix sums, `_steps_to`'s chunk sizes and searches (a join at a busy replica
        of many re-prices the rest of its stretch: this was most of that join's cost).

        `ahead` (> 0: a replica among many, whose horizon is a guess `lookahead` arrival gaps
        away): with more than `SEGMENTS` + 1 requests leaving before the last step (a busy
        replica's batch), at most this many steps are priced by the scalar loop instead of a
        numpy chunk to the horizon. The next
        arrival routed here usually cuts the stretch a few dozen steps on, so the chunk's
        hundreds of steps were mostly dropped; a stretch that reaches the last priced step uncut
        is extended by its end event (`price`, as before). The same floats either way."""
        k, kmax, rem, p = self.k, self.kmax, self._sorted_rem, self._p
        m = kmax - k
        if m <= 0 or self.end_s >= horizon:
            return
        if self._forms is None or self._f is None or self._priced != k or not self._active:
            return self.price(horizon)
        if horizon != float("inf") and self._steps_to(horizon) <= 64:
            return self._price_affine(horizon)  # (a near horizon, as at one replica: `price`'s scalar loop)
        # (the run-by-run loop below ends at the last departure: a length a policy capped below
        # it, `FastForward.max_steps`, goes the other way, as many departures do)
        if m > 1 << 15 or len(rem) - p > chunks.SEGMENTS + 1 or rem[-1] != kmax:
            if ahead:
                return self._price_affine(horizon, k + ahead)
            return self.price(horizon)  # (many departures: `_chunk`'s steps vectorised)
        times = self._room(m)
        forms, remaining, ctx1 = self._forms, self.remaining, self.ctx1
        j, n, ctx = k, self._active, self._ctx_sum  # (step j's batch size and context sum)
        while True:
            stop = rem[p]  # (the next departure: > j, as the scalar state is step j's; the last is kmax)
            chunks.times_of_run(times[j - k:stop - k], forms, n, ctx)
            if stop == kmax:
                break
            ctx += n * (stop - j)
            j, i = stop, -1
            while rem[p] == j:  # (those whose last token was step j - 1 leave: `_leave`)
                i = remaining.index(j, i + 1)
                ctx -= ctx1[i] + j - 1
                n -= 1
                p += 1
        times[0] += self.end_s
        np.add.accumulate(times, out=times)
        self._priced = kmax
        self._f = None  # (as after a chunk: the scalar state is synced again if needed)
        # the steps that start before the horizon (the last may end after it)
        self._take(kmax if times[m - 1] < horizon else k + int(times.searchsorted(horizon)) + 1)

    def _chunk(self, steps: int) -> None:
        """Price the next steps j0 .. j0+m-1 at once: step j runs the requests with remaining
        > j, whose context sum is (their ctx1 sum) + (j - 1) * (their count) — exact integers,
        the values stepping reaches by increments. `steps`: about how many steps reach the
        horizon (`_steps_to`; -1: no horizon)."""
        j0 = self.k
        m = self.kmax - j0
        if steps >= 0:  # about twice the steps the horizon needs (at least 64, or j0)
            m = min(m, max(64, j0, 2 * steps))
        m = min(m, 1 << 15)
        times = self._room(m)
        p = q = 0  # departures p..q-1 (in increasing order of remaining) happen inside the chunk
        if self.through:
            rem = self._sorted_rem
            p = bisect_right(rem, j0)
            q = bisect_left(rem, j0 + m, p)
        if p == q:  # one run of a constant batch (most chunks: a stretch of one or two requests)
            n = len(self.reqs) - p
            chunks.times_of_run(times, self._forms, n, self._ctx_total - (self._prefix()[p] if p else 0) + (j0 - 1) * n)
        elif q - p <= chunks.SEGMENTS:
            chunks.times_by_runs(times, j0, self._forms, len(self.reqs), self._sorted_rem, self._prefix(),
                                 self._ctx_total, p, q)
        else:
            chunks.times_by_steps(times, j0, self._forms, self._sorted_rem, self._prefix(), self._ctx_total)
        times[0] += self.end_s
        np.add.accumulate(times, out=times)  # (`cumsum`'s sequential sums, without its 1.5 us of overhead)
        self._priced += m
        self._f = None  # the scalar state is behind: synced again if the loop is needed

    def _steps_to(self, horizon: float) -> int:
        """About how many steps reach `horizon`, from the step time of the batch of step 1
        (steps only lengthen while it holds; if it shrinks, more steps follow)."""
        if self._step1_s is None and self._f:  # (the scalar form is cheapest, while in sync)
            self._step1_s = self._f(self._ctx_sum)
        if self._step1_s is None:
            base, cpu, g, overlap, _ = self._forms
            n = len(self.reqs)
            x = float(base[n]) + g * self._ctx_total
            self._step1_s = max(x, float(cpu[n])) if overlap else x + float(cpu[n])
        return int((horizon - self.end_s) / self._step1_s) + 1

    def _sync(self) -> None:
        """The scalar loop's state for the next step, after numpy chunks (exact integers)."""
        j = self.k
        if self.through:
            self._p = bisect_right(self._sorted_rem, j)  # requests with remaining <= j have left
            self._active = len(self._sorted_rem) - self._p
            prefix = self._prefix_sums
            # (without the prefix sums, which a join drops and a join's `price_on` does not need:
            # the ctx1 of those running, summed by one C pass rather than sorted for the sums)
            ctx = self._ctx_total - prefix[self._p] if prefix else sum(compress(self.ctx1, map(j.__lt__, self.remaining)))
            self._ctx_sum = ctx + (j - 1) * self._active
        else:
            self._ctx_sum = self._ctx_total + (j - 1) * self._active
        self._f = self._decode_fn(self._active) if self._active else None

    def _unwind(self, j: int) -> None:
        """The scalar state of step j < `_priced` from that of step `_priced` (`_f` set): the
        requests that left between them rejoin, each found by a scan of `remaining` as `_leave`
        found it, and everyone's context goes back by the steps between. The same exact integers
        as `_sync`'s pass over the batch (with up to dozens that left, at a busy replica among
        many, where a cut drops a few of the steps priced ahead and usually no departure)."""
        rem, remaining, ctx1 = self._sorted_rem, self.remaining, self.ctx1
        p, active = self._p, self._active
        ctx = self._ctx_sum - active * (self._priced - j)
        i = r_prev = -1
        while p and rem[p - 1] > j:  # (those with remaining in (j, _priced] left before step _priced)
            p -= 1
            r = rem[p]
            i = remaining.index(r, i + 1 if r == r_prev else 0)
            ctx += ctx1[i] + j - 1
            active += 1
            r_prev = r
        self._p, self._ctx_sum, self._active = p, ctx, active
        self._f = self._decode_fn(active) if active else None

    def _prefix(self) -> list[int]:
        """Prefix sums of ctx1 in increasing order of remaining, made once."""
        if self._prefix_sums is None:
            ctx1 = self.ctx1
            self._prefix_sums = list(accumulate(map(ctx1.__getitem__, self.departure_order()), initial=0))  # (no generator)
        return self._prefix_sums

    def _leave(self, j: int, rem: list[int] | None = None, ctx1: list[int] | None = None, lag: int = 0) -> None:
        """Requests whose last token was step j - 1 leave the batch before step j. (`rem`,
        `ctx1`, `lag`: lists whose running entries lag `lag` stalls behind, `AdmitStretch`'s.)"""
        # (found by a C scan of `remaining`, usually one: no sort of the batch by remaining;
        # the context sum is of integers, so the order of the subtractions does not matter)
        if rem is None:
            rem, ctx1 = self.remaining, self.ctx1
        sorted_rem, p = self._sorted_rem, self._p
        n = len(sorted_rem)
        i = -1
        while p < n and sorted_rem[p] == j:
            i = rem.index(j - lag, i + 1)
            self._ctx_sum -= ctx1[i] - lag + j - 1
            self._active -= 1
            p += 1
        self._p = p
        if self._active and self._f is not None:
            self._f = self._decode_fn(self._active)

    def _price_loop(self, horizon: float) -> None:
        """One scalar call per step, up to the horizon (`_price_affine` with the affine forms)."""
        ends: list[float] = []
        t = self.end_s
        j = self.k
        f, ctx_sum, active = self._f, self._ctx_sum, self._active
        rem = self._sorted_rem
        leave_at = rem[self._p] if rem is not None and self._p < len(rem) else -1  # next departure step
        while j < self.kmax and active and t < horizon:
            t += f(ctx_sum)
            ends.append(t)
            ctx_sum += active
            j += 1
            if j == leave_at:
                self._ctx_sum, self._active = ctx_sum, active
                self._leave(j)
                ctx_sum, active, f = self._ctx_sum, self._active, self._f
                leave_at = rem[self._p] if self._p < len(rem) else -1
        self._ctx_sum, self._active = ctx_sum, active
        if ends:
            self._append(ends)

    def _price_affine(self, horizon: float, stop: int = 1 << 62) -> None:
        """`_price_loop` with the perf model's affine decode form written out (no call per
        step): the same floats, as the scalar form evaluates it (`PerfModel.decode_time_fn`:
        base + g * ctx_sum, then max with the CPU time if they overlap, else plus it; Python's
        max keeps the first of equals), with base and cpu the forms' entries for the batch size.
        `stop`: no step from that one on (`price_on`'s steps ahead). From step k's scalar state
        (`_priced == k`). Priced run by run of a constant batch (`affine_run`), each up to the
        next departure, the array's room or `stop`: the checks that change only there are made
        once a run, not once a step."""
        base_a, cpu_a, g, overlap, runs = self._forms
        if runs is not None:  # (the same values as Python floats: no numpy scalar per read)
            base_a, cpu_a = runs.base_s, runs.cpu_s
        t = self.end_s
        j = self.k
        ctx_sum, active = self._ctx_sum, self._active
        rem = self._sorted_rem
        leave_at = rem[self._p] if rem is not None and self._p < len(rem) else -1  # next departure step (> j)
        if self.kmax < stop:
            stop = self.kmax
        # Each step's end is stored as it is priced, at index j: appended to a list, or written
        # through the array's memoryview (about 290 instructions a step, where a list of the
        # steps packed and copied in after the loop cost about 9,000 a call of 20 steps). The
        # array's room bounds a run (`lim`); the loop runs on once it is grown.
        ends = self._ends
        arr = type(ends) is not list
        if arr:
            ends = self._endv
            lim = n if (n := len(ends)) < stop else stop
        else:
            del ends[j:]  # (what a truncation dropped)
            lim = stop
        while active and t < horizon:
            end = leave_at if j < leave_at < lim else lim
            if j < end:
                i = j
                t, j = affine_run(ends, arr, overlap, j, end, t, horizon, float(base_a[active]),
                                   float(cpu_a[active]), g, ctx_sum, active)
                ctx_sum += active * (j - i)
            if j == leave_at:  # (those whose last token was step j - 1 leave)
                self._ctx_sum, self._active = ctx_sum, active
                self._leave(j)
                ctx_sum, active = self._ctx_sum, self._active
                leave_at = rem[self._p] if self._p < len(rem) else -1
            elif j == lim and j < stop:
                self._priced = j  # (the array is full: `_room` doubles it, keeping the steps so far)
                self._room(1)
                ends = self._endv
                lim = n if (n := len(ends)) < stop else stop
            else:
                break
        self._ctx_sum, self._active = ctx_sum, active
        self._priced = self.k = j  # (`_take`: t is the float just stored)
        self.end_s = t

    def _price_vectorised(self, horizon: float) -> None:
        """Sliding-window models have no scalar decode form: price chunks of steps with numpy
        (the same sequential sums; only without `through`)."""
        j = self.k
        m = min(self.kmax - j, max(16, j))
        times = self._perf.decode_step_times_s(np.array(self.ctx1, dtype=np.int64) + (j - 1), m)
        times[0] += self.end_s
        rest = self._room(m)
        np.cumsum(times, out=rest)
        self._priced += m
        self._take(j + min(m, 1 + int(rest.searchsorted(horizon))))
