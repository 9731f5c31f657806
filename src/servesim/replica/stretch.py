"""Pricing the steps of a fast-forwarded stretch (pure functions of the batch and a cost model).

A stretch is an engine step followed by decode-only steps that repeat it (see `Engine`). These
functions give each step's end time, summed one by one exactly as stepping would, and how many
requests run in it; they stop before a step that would start at or after the horizon (the next
event that could change the batch).
"""

from __future__ import annotations

from typing import Callable, Literal

import numpy as np

# the perf model's scalar decode step time for n sequences (ctx_sum -> seconds), or False
DecodeFn = Callable[[int], "Callable[[int], float] | Literal[False]"]


def stretch_ends(decode_fn: DecodeFn, perf, end0_s: float, ctx1: list[int], k: int,
                 horizon: float) -> tuple[list[float], list[int]]:
    """End times and batch sizes of up to k steps of a fixed batch: step 0 ends at end0_s,
    steps 1.. are decode-only with contexts ctx1, ctx1 + 1, ...; stops before a step that
    would start at or after `horizon`. Summed one by one, exactly as stepping does."""
    n = len(ctx1)
    ends = [end0_s]
    if end0_s < horizon:
        f = decode_fn(n)
        if f is False:  # no scalar form (sliding window): vectorised times
            times = perf.decode_step_times_s(np.array(ctx1, dtype=np.int64), k - 1)
            times[0] += end0_s
            rest = np.cumsum(times)
            ends += rest[: min(k - 1, 1 + int(rest.searchsorted(horizon)))].tolist()
        else:
            ctx_sum = sum(ctx1)
            t = end0_s
            for j in range(k - 1):
                if j and t >= horizon:
                    break
                t += f(ctx_sum + n * j)
                ends.append(t)
    return ends, [n] * len(ends)


def stretch_through(decode_fn: DecodeFn, end0_s: float, ctx1: list[int], remaining: list[int], k: int,
                    horizon: float) -> tuple[list[float], list[int]]:
    """Like `stretch_ends`, but request i leaves the batch after its step remaining[i] - 1."""
    n = len(ctx1)
    order = sorted(range(n), key=remaining.__getitem__)
    ends, sizes = [end0_s], [n]
    active, ctx_sum, p = n, sum(ctx1), 0
    j = 1
    while p < n and remaining[order[p]] == j:  # finished at step 0
        ctx_sum -= ctx1[order[p]]
        active -= 1
        p += 1
    t = end0_s
    f = decode_fn(active) if active else None
    while j < k and active and t < horizon:
        t += f(ctx_sum)
        ends.append(t)
        sizes.append(active)
        ctx_sum += active
        j += 1
        if p < n and remaining[order[p]] == j:
            while p < n and remaining[order[p]] == j:  # finished at step j - 1
                ctx_sum -= ctx1[order[p]] + j - 1
                active -= 1
                p += 1
            if active:
                f = decode_fn(active)
    return ends, sizes
