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
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from itertools import accumulate
from typing import Any, Callable, Literal

import numpy as np

from servesim.metrics.recorder import BatchRuns
from servesim.replica import stretch_chunks as chunks
from servesim.replica.stretch_chunks import DecodeForms

# the perf model's scalar decode step time for n sequences (ctx_sum -> seconds), or False
DecodeFn = Callable[[int], "Callable[[int], float] | Literal[False]"]


class Stretch:
    """Steps of a fixed decode batch, priced lazily; the engine applies them at `end_s`."""

    __slots__ = ("start_s", "out", "decodes", "prefills", "reqs", "ctx1", "remaining", "through", "keyed",
                 "num_waiting", "waiting_from", "first_new", "free_blocks", "kmax", "final", "gen", "k", "end_s",
                 "_decode_fn", "_forms", "_perf", "_ctx_sum", "_active", "_order", "_sorted_rem", "_p", "_f",
                 "_ctx_total", "_prefix_sums", "_ends", "_priced", "_step1_s")

    def __init__(self, start_s: float, end0_s: float, out: Any, decodes: list, prefills: list, reqs: list,
                 ctx1: list[int], remaining: list[int], through: bool, decode_fn: DecodeFn, perf: Any,
                 num_waiting: int, forms: Callable[[int], "DecodeForms | None"] = lambda n: None) -> None:
        self.start_s = start_s
        self.out = out
        self.decodes = decodes
        self.prefills = prefills
        self.reqs = reqs  # decodes, then the requests whose prompts finish in step 0
        self.ctx1 = ctx1  # their contexts when step 1 starts
        self.remaining = remaining  # tokens each still emits, step 0 included
        self.through = through
        self.keyed = [(r, c) for r, c in zip(reqs, ctx1) if r.kv_block_keys]
        self.num_waiting = num_waiting  # the scheduler's waiting count when step 0 was scheduled
        self.waiting_from: list[int] = []  # steps from which one more request waits (arrivals kept)
        self.first_new: list[int] = []  # set by the engine: first step needing one more block, per request
        self.free_blocks = 0  # free KV blocks when the stretch was planned
        self.kmax = max(remaining) if through else min(remaining)
        n = len(reqs)
        # End times of the steps (s): the first k are the stretch's, up to `_priced` are priced
        # ahead with numpy and taken as the horizon moves. A list while the scalar loop prices
        # (short stretches: no numpy call at all), a float array from the first numpy chunk on
        # (the step log copies it as it is, never through Python floats).
        self._ends: list[float] | np.ndarray = [end0_s]
        self.k = 1  # steps in the stretch
        self.end_s = end0_s  # end of its last step: when the engine applies the stretch
        self._priced = 1
        self.final = False  # cut (or limited): never extended again
        self.gen = 0  # bumped whenever the pending end event is replaced
        self._decode_fn = decode_fn
        self._perf = perf
        self._ctx_sum = self._ctx_total = sum(ctx1)
        self._order = sorted(range(n), key=remaining.__getitem__) if through else None
        self._sorted_rem = [remaining[i] for i in self._order] if through else None
        self._prefix_sums = None  # ctx1 prefix sums in increasing order of remaining, made on first use
        self._step1_s = None  # an estimate of a step's time, for sizing chunks
        self._forms = forms(n)  # the affine decode forms by batch size (None: price step by step)
        # the batch of the next step for the scalar loop: size, context sum, step time function
        self._active = n
        self._p = 0
        self._f = None
        if through:
            self._leave(1)  # requests whose only token is step 0's
        if self._active:
            self._f = decode_fn(self._active)

    @property
    def ends(self) -> list[float] | np.ndarray:
        """End time of each step of the stretch (s) (an array is a view: valid until the
        stretch changes)."""
        return self._ends[:self.k]

    def batch_runs(self) -> BatchRuns:
        """Requests in each step, run by run of a constant batch: all of them, less
        (`through`) those whose last token was an earlier step's."""
        k, n = self.k, len(self.reqs)
        if not self.through:
            return BatchRuns([n], [k])
        rem = self._sorted_rem
        sizes: list[int] = []
        lens: list[int] = []
        j = p = 0
        while j < k:
            while rem[p] <= j:  # (p < n: j < kmax, the largest remaining)
                p += 1
            stop = min(rem[p], k)
            sizes.append(n - p)
            lens.append(stop - j)
            j = stop
        return BatchRuns(sizes, lens)

    def batch_sizes(self) -> list[int]:
        """Requests in each step (`batch_runs` expanded)."""
        sizes, lens = self.batch_runs()
        return [size for size, m in zip(sizes, lens) for _ in range(m)]

    def tokens_before(self, j: int) -> int:
        """Tokens emitted by steps 0..j-1 (j < k): each request runs min(remaining, j) of them."""
        return sum(r if r < j else j for r in self.remaining)

    def _take(self, stop: int) -> None:
        """The priced steps up to `stop` join the stretch."""
        self.k = stop
        self.end_s = float(self._ends[stop - 1])

    def _room(self, m: int) -> np.ndarray:
        """The array's free tail for m more priced steps (grown by doubling; made from the
        list on the first numpy chunk)."""
        ends, p = self._ends, self._priced
        if type(ends) is list or p + m > len(ends):
            grown = np.empty(max(2 * len(ends), p + m, 64))
            grown[:p] = ends[:p]
            self._ends = ends = grown
        return ends[p:p + m]

    def _append(self, ends: list[float]) -> None:
        """Steps priced by the scalar loop join the stretch."""
        if type(self._ends) is list:
            del self._ends[self._priced:]  # (what a truncation dropped)
            self._ends += ends
        else:
            self._room(len(ends))[:] = ends
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
                if steps < 0 or steps > 64:
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
                    self._price_loop(horizon)
                    continue
            # the priced steps that start before the horizon (the last may end after it)
            self._take(min(p, k + int(self._ends[k:p].searchsorted(horizon)) + 1))

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
        prefix = self._prefix() if self.through else [0]
        if q - p <= chunks.SEGMENTS:
            chunks.times_by_runs(times, j0, self._forms, len(self.reqs), self._sorted_rem, prefix, self._ctx_total, p, q)
        else:
            chunks.times_by_steps(times, j0, self._forms, self._sorted_rem, prefix, self._ctx_total)
        times[0] += self.end_s
        times.cumsum(out=times)
        self._priced += m
        self._f = None  # the scalar state is behind: synced again if the loop is needed

    def _steps_to(self, horizon: float) -> int:
        """About how many steps reach `horizon`, from the step time of the batch of step 1
        (steps only lengthen while it holds; if it shrinks, more steps follow)."""
        if self._step1_s is None and self._f:  # (the scalar form is cheapest, while in sync)
            self._step1_s = self._f(self._ctx_sum)
        if self._step1_s is None:
            base, cpu, g, overlap = self._forms
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
            self._ctx_sum = self._ctx_total - self._prefix()[self._p] + (j - 1) * self._active
        else:
            self._ctx_sum = self._ctx_total + (j - 1) * self._active
        self._f = self._decode_fn(self._active) if self._active else None

    def _prefix(self) -> list[int]:
        """Prefix sums of ctx1 in increasing order of remaining, made once."""
        if self._prefix_sums is None:
            ctx1 = self.ctx1
            self._prefix_sums = list(accumulate((ctx1[i] for i in self._order), initial=0))
        return self._prefix_sums

    def _leave(self, j: int) -> None:
        """Requests whose last token was step j - 1 leave the batch before step j."""
        order, rem, ctx1, p = self._order, self.remaining, self.ctx1, self._p
        n = len(order)
        while p < n and rem[order[p]] == j:
            self._ctx_sum -= ctx1[order[p]] + j - 1
            self._active -= 1
            p += 1
        self._p = p
        if self._active and self._f is not None:
            self._f = self._decode_fn(self._active)

    def _price_loop(self, horizon: float) -> None:
        """One scalar call per step, up to the horizon."""
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

    # ---------------------------------------------------------------- cutting
    def steps_before(self, t: float) -> int:
        """Steps that ended before `t` (events at `t` come before a step ending at `t`)."""
        return bisect_left(self._ends, t, 0, self.k)

    def step_in_flight(self, t: float) -> int:
        """The step running at `t` (the last one if `t` is at or after the end)."""
        return min(bisect_left(self._ends, t, 0, self.k), self.k - 1)

    def add_waiting(self, t: float) -> None:
        """A request joined the waiting queue at `t` without cutting the stretch: stepping,
        the step after the one in flight (events at `t` come before a step ending at `t`)
        would be the first to see it. That step may lie past the priced ones (the stretch
        may be extended); it is logged only if the stretch reaches it."""
        self.waiting_from.append(bisect_left(self._ends, t, 0, self.k) + 1)

    def blocks_added(self, j: int, block_size: int, blocks_held: Callable[[Any], int]) -> int:
        """KV blocks the stretch has added by step j (allocated at steps 1..j), less those of
        requests that finished before step j (`blocks_held(req)`: what each held at step 0)."""
        delta = 0
        for req, f, r in zip(self.reqs, self.first_new, self.remaining):
            last = min(j, r - 1)  # the request's last step at or before j
            if f <= last:
                delta += (last - f) // block_size + 1
            if r <= j:  # finished in step r - 1 < j: everything it held is free again
                delta -= blocks_held(req) + ((r - 1 - f) // block_size + 1 if f <= r - 1 else 0)
        return delta

    def truncate(self, k: int) -> None:
        """Keep the first k steps (k >= 1); nothing priced ahead is taken any more."""
        self._priced = k
        self._take(k)

    def cut(self, t: float) -> bool:
        """Keep the steps that started before `t`; True if steps were dropped."""
        self.final = True
        k = bisect_left(self._ends, t, 0, self.k) + 1
        if k < self.k:
            self.truncate(k)
            return True
        return False

    def finished_by(self, t: float) -> int:
        """How many requests emitted their last token in steps that ended before `t`
        (`finished_before(step_in_flight(t))`, read at every routing decision: none while the
        first departure's step has not ended, without a search)."""
        rem = self._sorted_rem
        if rem is None:
            return 0
        r = rem[0]  # the first departure: its last token is step r - 1's
        if r >= self.k or self._ends[r - 1] >= t:
            return 0
        return bisect_left(rem, self.step_in_flight(t) + 1)

    def finished_before(self, j: int) -> int:
        """How many requests emitted their last token in steps 0..j-1."""
        if not self.through:
            return 0
        return bisect_left(self._sorted_rem, j + 1)
