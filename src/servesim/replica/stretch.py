"""A fast-forwarded stretch: an engine step followed by decode-only steps that repeat it.

The engine plans a stretch when the scheduler says the next steps would repeat the batch (see
`Engine`), prices its steps here and handles them as one event. A stretch is an object that
can be cut and extended, so that each replica's stretch runs to its own next event however
many other replicas share the event loop:

- `price(horizon)` sums step times one by one, exactly as stepping would, and stops before a
  step that would start at or after `horizon` or past `kmax` steps. Pricing is lazy: the
  engine prices up to the next event it knows of and extends the stretch when that event
  turned out not to concern this replica.
- `cut(t)`: something happened at `t` that the scheduler must see (a request arrived): keep
  only the steps that started before `t` (the last one is in flight) and never extend again.
- `steps_before(t)`: how many steps ended before `t` (reading the replica's state at `t`).

Step j >= 1 runs every request still in the batch for one token; in `through` mode requests
leave the batch after their last token (remaining[i] steps), otherwise the stretch stops at
the first finish.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Any, Callable, Literal

import numpy as np

# the perf model's scalar decode step time for n sequences (ctx_sum -> seconds), or False
DecodeFn = Callable[[int], "Callable[[int], float] | Literal[False]"]


class Stretch:
    """Steps of a fixed decode batch, priced lazily; the engine applies them at `ends[-1]`."""

    __slots__ = ("start_s", "out", "decodes", "prefills", "reqs", "ctx1", "remaining", "through", "keyed",
                 "num_waiting", "first_new", "free_blocks", "kmax", "ends", "sizes", "final", "gen",
                 "_decode_fn", "_affine", "_perf", "_ctx_sum", "_active", "_order", "_sorted_rem", "_p", "_f",
                 "_ctx_total", "_arrays")

    def __init__(self, start_s: float, end0_s: float, out: Any, decodes: list, prefills: list, reqs: list,
                 ctx1: list[int], remaining: list[int], through: bool, decode_fn: DecodeFn, perf: Any,
                 num_waiting: int, affine: Callable[[int], tuple | None] = lambda n: None) -> None:
        self.start_s = start_s
        self.out = out
        self.decodes = decodes
        self.prefills = prefills
        self.reqs = reqs  # decodes, then the requests whose prompts finish in step 0
        self.ctx1 = ctx1  # their contexts when step 1 starts
        self.remaining = remaining  # tokens each still emits, step 0 included
        self.through = through
        self.keyed = [(r, c) for r, c in zip(reqs, ctx1) if r.kv_block_keys]
        self.num_waiting = num_waiting  # the scheduler's waiting count, logged for every step
        self.first_new: list[int] = []  # set by the engine: first step needing one more block, per request
        self.free_blocks = 0  # free KV blocks when the stretch was planned
        self.kmax = max(remaining) if through else min(remaining)
        self.ends = [end0_s]
        self.sizes = [len(reqs)]
        self.final = False  # cut (or limited): never extended again
        self.gen = 0  # bumped whenever the pending end event is replaced
        self._decode_fn = decode_fn
        self._affine = affine  # batch size -> the perf model's (base, g, cpu, overlap), or None
        self._perf = perf
        n = len(reqs)
        self._ctx_sum = self._ctx_total = sum(ctx1)
        self._arrays = None  # (sorted remaining, ctx1 prefix sums in that order), made on first use
        self._active = n
        self._order = sorted(range(n), key=remaining.__getitem__) if through else None
        self._sorted_rem = [remaining[i] for i in self._order] if through else None
        self._p = 0
        self._f = None
        if through:
            self._leave(1)  # requests whose only token is step 0's
        if self._active:
            self._f = decode_fn(self._active)

    # ---------------------------------------------------------------- pricing
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

    def price(self, horizon: float) -> None:
        """Append steps until one would start at or after `horizon`, or `kmax` steps.

        A step's time is an affine function of the batch's context sum, with coefficients
        that depend on the batch size; long runs are priced with numpy over all their steps,
        departures included (the same floats in the same order as the scalar loop, which
        prices short runs)."""
        if self._f is False:
            return self._price_vectorised(horizon)
        ends = self.ends
        while len(ends) < self.kmax and self._active and ends[-1] < horizon:
            m = self.kmax - len(ends)
            if horizon != float("inf"):  # steps only grow longer: the next one bounds how many fit
                m = min(m, int((horizon - ends[-1]) / self._f(self._ctx_sum)) + 2)
            # numpy's fixed cost per call pays off only for long runs (more so with departures)
            if m > (256 if self.through else 64) and self._affine(self._active) is not None:
                self._price_numpy(min(m, 1 << 14), horizon)
            else:
                self._price_loop(m, horizon)

    def _price_loop(self, m: int, horizon: float) -> None:
        ends, sizes = self.ends, self.sizes
        t = ends[-1]
        j = len(ends)
        stop = j + m
        f, ctx_sum, active = self._f, self._ctx_sum, self._active
        rem = self._sorted_rem
        leave_at = rem[self._p] if rem is not None and self._p < len(rem) else -1  # next departure step
        while j < stop and active and t < horizon:
            t += f(ctx_sum)
            ends.append(t)
            sizes.append(active)
            ctx_sum += active
            j += 1
            if j == leave_at:
                self._ctx_sum, self._active = ctx_sum, active
                self._leave(j)
                ctx_sum, active, f = self._ctx_sum, self._active, self._f
                leave_at = rem[self._p] if self._p < len(rem) else -1
        self._ctx_sum, self._active = ctx_sum, active

    def _price_numpy(self, m: int, horizon: float) -> None:
        """Steps j0 .. j0+m-1 at once: step j runs the requests with remaining > j, whose
        context sum is (their ctx1 sum) + (j - 1) * (their count) — exact integers, so the
        same values the scalar loop reaches by increments."""
        ends = self.ends
        j0 = len(ends)
        j = np.arange(j0, j0 + m, dtype=np.int64)
        if self.through:
            gone = np.searchsorted(self._rem_arr, j, side="right")  # requests done before step j
            n = len(self._rem_arr) - gone
            keep = int(np.count_nonzero(n))
            j, gone, n = j[:keep], gone[:keep], n[:keep]
            ctx = self._ctx_total - self._ctx_prefix[gone] + (j - 1) * n
        else:
            n = np.full(len(j), self._active, dtype=np.int64)
            ctx = self._ctx_total + (j - 1) * self._active
        if self.through:  # n only falls: one affine form per run of equal batch sizes
            starts = np.concatenate([[0], np.flatnonzero(np.diff(n)) + 1])
            lens = np.diff(np.append(starts, len(n)))
            forms = [self._affine(int(x)) for x in n[starts]]
            base = np.repeat([f[0] for f in forms], lens)
            cpu = np.repeat([f[2] for f in forms], lens)
        else:
            forms = [self._affine(self._active)]
            base, cpu = forms[0][0], forms[0][2]
        x = base + forms[0][1] * ctx
        times = np.maximum(x, cpu) if forms[0][3] else x + cpu
        times[0] += ends[-1]
        e = np.cumsum(times)
        take = min(len(e), int(e.searchsorted(horizon)) + 1)
        ends += e[:take].tolist()
        self.sizes += n[:take].tolist()
        # the scalar state after those steps
        jn = j0 + take
        if self.through:
            self._leave_to(jn)
        self._ctx_sum = self._ctx_at(jn)

    @property
    def _rem_arr(self) -> np.ndarray:
        return self._sorted_arrays()[0]

    @property
    def _ctx_prefix(self) -> np.ndarray:
        return self._sorted_arrays()[1]

    def _sorted_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self._arrays is None:
            ctx = np.array([self.ctx1[i] for i in self._order], dtype=np.int64)
            self._arrays = (np.array(self._sorted_rem, dtype=np.int64), np.concatenate([[0], np.cumsum(ctx)]))
        return self._arrays

    def _leave_to(self, j: int) -> None:
        """The batch before step j: every request with remaining <= j has left."""
        self._p = bisect_right(self._sorted_rem, j)
        self._active = len(self._order) - self._p
        if self._active:
            self._f = self._decode_fn(self._active)

    def _ctx_at(self, j: int) -> int:
        """Context sum of the batch in step j (integers, exact)."""
        if self.through:
            return self._ctx_total - int(self._ctx_prefix[self._p]) + (j - 1) * self._active
        return self._ctx_total + (j - 1) * self._active

    def _price_vectorised(self, horizon: float) -> None:
        """Sliding-window models have no scalar decode form: price chunks of steps with numpy
        (the same sequential sums; only without `through`)."""
        ends = self.ends
        while len(ends) < self.kmax and ends[-1] < horizon:
            j = len(ends)
            m = min(self.kmax - j, max(16, j))
            times = self._perf.decode_step_times_s(np.array(self.ctx1, dtype=np.int64) + (j - 1), m)
            times[0] += ends[-1]
            rest = np.cumsum(times)
            take = rest[: min(m, 1 + int(rest.searchsorted(horizon)))].tolist()
            ends += take
            self.sizes += [len(self.reqs)] * len(take)

    # ---------------------------------------------------------------- cutting
    def steps_before(self, t: float) -> int:
        """Steps that ended before `t` (events at `t` come before a step ending at `t`)."""
        return bisect_left(self.ends, t)

    def step_in_flight(self, t: float) -> int:
        """The step running at `t` (the last one if `t` is at or after the priced end)."""
        return min(self.steps_before(t), len(self.ends) - 1)

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
        """Keep the first k steps (k >= 1)."""
        del self.ends[k:], self.sizes[k:]

    def cut(self, t: float) -> bool:
        """Keep the steps that started before `t`; True if steps were dropped."""
        self.final = True
        k = min(self.steps_before(t) + 1, len(self.ends))
        if k < len(self.ends):
            self.truncate(k)
            return True
        return False

    def finished_before(self, j: int) -> int:
        """How many requests emitted their last token in steps 0..j-1."""
        if not self.through:
            return 0
        return bisect_left(self._sorted_rem, j + 1)
