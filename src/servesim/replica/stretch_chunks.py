"""Step times of a stretch's numpy chunk: pure functions of the perf model's affine decode
forms and the batch (see `Stretch.price`), and the forms themselves (with one request's step
times by context, made once); and the scalar loop over a run of a constant batch by those forms
(`affine_run`, for runs too short for a chunk).

Step j of a stretch runs the requests with remaining > j, whose context sum is (their ctx1
sum) + (j - 1) * (their count): exact integers, the values stepping reaches by increments.
Each step's time is computed from them with the scalar form's float operations in the same
order, so a sequential cumulative sum of these times gives stepping's end times bit for bit.
"""

from __future__ import annotations

from typing import Final

import numpy as np


class RunTimes:
    """The step times of a batch of one or two requests (`SMALL`) by its context sum, made once
    for an engine's forms: a run of n requests whose first step's context sum is c is the
    slice c, c + n, ... of batch size n's table (the commonest runs at many replicas: an
    arrival at an idle replica, one that joined it) instead of three or four numpy calls.
    Each element is `times_of_run`'s, made by the same operations on the same values; each
    table grown by doubling to the largest context sum asked, up to `LONGEST` values."""

    __slots__ = ("_base", "_cpu", "_g", "_overlap", "_tables", "base_s", "cpu_s")

    # (a table covers the context sums from 0 to the largest asked, n times a context: for 3 or 4
    # requests, rarer, making it cost about what its runs saved, in page faults mostly)
    SMALL: Final = 2
    # values in one table at most (1 MB; at most 2 MB an engine, whatever the contexts and the
    # replicas): a run past it is priced by numpy calls
    LONGEST: Final = 1 << 17

    def __init__(self, base: np.ndarray, cpu: np.ndarray, g: float, overlap: bool) -> None:
        self._base, self._cpu, self._g, self._overlap = base, cpu, g, overlap
        self._tables = [np.empty(0)] * (self.SMALL + 1)
        # the forms' entries as Python floats (the arrays' values): the scalar loop reads one pair
        # per call and per departure, which from the arrays is a numpy scalar made and converted
        self.base_s, self.cpu_s = base.tolist(), cpu.tolist()

    def upto(self, n: int, stop: int) -> np.ndarray | None:
        """Batch size n's times for context sums 0 .. at least stop - 1 (None: past `LONGEST`)."""
        table = self._tables[n]
        if len(table) < stop:
            if stop > self.LONGEST:
                return None
            table = np.multiply(np.arange(0.0, float(min(max(stop, 1024, 2 * len(table)), self.LONGEST))), self._g)
            table += self._base[n]
            if self._overlap:
                np.maximum(table, self._cpu[n], out=table)  # (where a time is above the floor, it stays)
            else:
                table += self._cpu[n]
            self._tables[n] = table
        return table


# the affine decode form for batch sizes 0..n: (base_s[n], cpu_s[n], g, overlap, runs), step time =
# max(base + g * ctx_sum, cpu) if overlap else base + g * ctx_sum + cpu (see PerfModel.decode_affine);
# `runs`: small batches' step times (`RunTimes`), None: computed each time. (A plain tuple, which
# Python unpacks faster than a subclass: the forms are unpacked at every join.)
DecodeForms = tuple[np.ndarray, np.ndarray, float, bool, "RunTimes | None"]
# The context sums are made by a float `arange`: whole numbers below 2^53 (token counts) are
# exact in float64, and `arange` makes each as start + i * step, exact too, so each product
# with g is the one of the integer (numpy converts an int64 to float64 before multiplying),
# without an int64 array and a cast loop (about 0.6 us a chunk).
# A chunk with at most this many departures is priced run by run of a constant batch (four
# numpy calls a run); with more, vectorised over its steps (about fifteen calls and two arrays).
SEGMENTS = 4


def times_of_run(times: np.ndarray, forms: DecodeForms, n: int, ctx0: int) -> None:
    """Fill `times` with the step times of a run of n requests whose first step's context sum is
    `ctx0` (it grows by n a step): one run of `times_by_runs`, in three or four numpy calls.
    With `overlap`, the CPU floor is applied only if the first step is below it: the times only
    grow along the run (n and g >= 0, and rounding keeps order), so past a first step at or
    above the floor `maximum` would change nothing (the scalar form's first element, computed
    the same way: the int to float, times g, plus base)."""
    base, cpu, g, overlap, runs = forms
    if runs is not None and n <= RunTimes.SMALL:
        stop = ctx0 + len(times) * n
        table = runs.upto(n, stop)
        if table is not None:
            times[:] = table[ctx0:stop:n]
            return
    b = base[n]
    np.multiply(np.arange(float(ctx0), float(ctx0 + len(times) * n), float(n)), g, out=times)
    times += b
    if overlap:
        c = cpu[n]
        if g < 0 or float(ctx0) * g + b < c:
            np.maximum(times, c, out=times)
    else:
        times += cpu[n]


def times_by_runs(times: np.ndarray, j0: int, forms: DecodeForms, n_all: int, rem: list[int] | None,
                  prefix: list[int], ctx_total: int, p: int, q: int) -> None:
    """Fill `times` with the step times from step j0 on, run by run of a constant batch.

    `rem`: remaining counts in increasing order (None: nobody leaves), `prefix`: prefix sums of
    ctx1 in that order; the requests p..q-1 of that order leave inside the chunk (before step
    rem[i]), the first p before it."""
    j, end = j0, j0 + len(times)
    while j < end:
        stop = min(rem[p], end) if p < q else end
        n = n_all - p
        ctx0 = ctx_total - prefix[p] + (j - 1) * n
        times_of_run(times[j - j0:stop - j0], forms, n, ctx0)
        j = stop
        while p < q and rem[p] == j:
            p += 1


def times_by_steps(times: np.ndarray, j0: int, forms: DecodeForms, rem: list[int], prefix: list[int],
                   ctx_total: int) -> None:
    """Fill `times` with the step times from step j0 on, vectorised over the steps (each
    step's batch from the sorted remaining counts `rem`; `prefix` as in `times_by_runs`)."""
    base, cpu, g, overlap, _ = forms
    rem_a, prefix_a = np.array(rem, dtype=np.int64), np.array(prefix, dtype=np.int64)
    j = np.arange(j0, j0 + len(times), dtype=np.int64)
    gone = rem_a.searchsorted(j, side="right")  # requests done before step j
    n = len(rem_a) - gone  # (>= 1: j < kmax, the largest remaining)
    x = base[n] + g * ((ctx_total - prefix_a[gone]) + (j - 1) * n)
    if overlap:
        np.maximum(x, cpu[n], out=times)
    else:
        np.add(x, cpu[n], out=times)


def affine_run(ends, arr: bool, overlap: bool, j: int, end: int, t: float, horizon: float, base: float, cpu: float,
               g: float, ctx_sum: int, n: int) -> tuple[float, int]:
    """Steps j .. end - 1 of a batch of n requests (context sum `ctx_sum` at step j), each
    ending `base + g * ctx` later (max with `cpu` if `overlap`, else plus it), stored in `ends`
    (`arr`: a memoryview, written at j; else a list of j ends, appended to), up to the first
    that ends at or after `horizon` (j < end, t < horizon). Returns the last end and the next
    step. One loop per form and store, so a step runs no test that holds for the whole run.
    The context sum is carried as a float: the batch's tokens in the KV cache, far below 2^53,
    so it and each product are the floats the integer gave."""
    ctx, dn = float(ctx_sum), float(n)
    if arr:
        if overlap:
            for j in range(j, end):
                x = base + g * ctx
                t += cpu if cpu > x else x
                ends[j] = t
                ctx += dn
                if t >= horizon:
                    break
        else:
            for j in range(j, end):
                t += base + g * ctx + cpu
                ends[j] = t
                ctx += dn
                if t >= horizon:
                    break
    else:
        append = ends.append
        if overlap:
            for j in range(j, end):
                x = base + g * ctx
                t += cpu if cpu > x else x
                append(t)
                ctx += dn
                if t >= horizon:
                    break
        else:
            for j in range(j, end):
                t += base + g * ctx + cpu
                append(t)
                ctx += dn
                if t >= horizon:
                    break
    return t, j + 1
