"""Applying a stretch with prompt-only steps (`Stretch.stall`: a prefill-first policy's
arrivals joining it).

In a prompt-only step s the requests running emit nothing: each request's tokens are its steps
less the stalls after its first, and its KV growth is regular only between stalls (the part
before each stall is in `Stretch.grown`). `_apply_stretch` asks here for what differs from a
stretch without stalls: the blocks grown before the stalls and the requests' token runs. An
admission stretch keeps its requests' growth in the frame of the steps that are not stalls
instead (a stall then touches no request's growth), mapped to the stretch's steps for the step
log when it is applied (`frame_growth`).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

import numpy as np

from servesim.replica.stretch import Stretch


def grown_blocks(st: Stretch, steps_of: list[int], block_size: int) -> dict[int, int]:
    """Blocks each stalled request grew before its stalls, by index (`grown`; steps it ran
    only: a stretch cut by a crash may stop before a stall)."""
    counts: dict[int, int] = {}
    for i, f, s in st.grown:
        m = steps_of[i]
        if s <= m:  # (`min(s, m)` without the builtin's call)
            m = s
        if f < m:
            counts[i] = counts.get(i, 0) + (m - f - 1) // block_size + 1
    return counts


def frame_growth(first_new: list[int], steps_of: list[int], stall_steps: list[int],
                 block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The step log's growth (`BlockGrowth`'s first_new and runs) of requests whose `first_new`
    is in the frame of the steps that are not stalls (an admission stretch's `growth`): each
    block's step mapped to the stretch's, one entry per block (its own run of one step).
    Request i runs steps_of[i] steps, of which those before it that are stalls do not grow."""
    at = np.array(stall_steps, dtype=np.int64)
    f = np.array(first_new, dtype=np.int64)
    m = np.array(steps_of, dtype=np.int64)
    m -= np.searchsorted(at, m)  # (its steps that are not stalls: those of the growth's frame)
    c = np.where(f < m, (m - f - 1) // block_size + 1, 0)  # blocks each gets
    steps = np.repeat(f, c) + block_size * (np.arange(int(c.sum())) - np.repeat(np.cumsum(c) - c, c))
    # the frame's step u is the stretch's u + (the stalls up to it): stall t (at step s_t) comes
    # after the frame's steps below s_t - t
    steps += np.searchsorted(at - np.arange(len(at)), steps, side="right")
    return steps, steps + 1


def apply_stalled(st: Stretch, steps_of: list[int], first: int, frees: list[tuple[int, int]],
                  blocks: list[int]) -> tuple[int, list[tuple[int, int]]]:
    """`advance_decodes`, `apply_step0_prompts` and `apply_joins` for a stretch with stalls:
    each request emits a token at the end of each of its steps (from step 0, or its join step)
    but the stall steps after its first. Returns the step-0 prompt tokens and the join steps'
    (step, prompt tokens), for the step log; appends the joiners' blocks to `frees` as
    `apply_joins` does."""
    k, ends = st.k, st.ends_view  # (Python floats: no numpy scalar made per read)
    stalls = [s for s, _ in st.stalls if s < k]
    nd, n0 = len(st.decodes), len(st.reqs) - len(st.joins)
    joined = iter(zip(st.joins, blocks))
    prefill_tokens = 0
    prefill_at: dict[int, int] = {}
    # the runs from each stall to the next (none between adjacent ones), and where each stall's
    # starts in that list: the same int objects in every request's runs (as stepping's steps are)
    between, at = [], []
    for s, t in zip(stalls, stalls[1:]):
        at.append(len(between))
        if t > s + 1:
            between += (first + s + 1, first + t - 1)
    at.append(len(between))
    for i, (req, hi) in enumerate(zip(st.reqs, steps_of)):
        lo, n = 0, 0
        if i >= n0:
            (lo, _, n), base = next(joined)
            if lo >= k:  # (a crash settled the stretch before the step it joined in ended)
                continue
            prefill_at[lo] = prefill_at.get(lo, 0) + n
            frees.append((lo, -base))
        elif i >= nd:
            n = st.prefills[i - nd][1]
            prefill_tokens += n
        # its steps lo .. hi - 1 less the stalls after lo, as runs: its own first and last, the
        # runs between the stalls it ran across shared (a slice of `between`)
        p, q = bisect_right(stalls, lo), bisect_left(stalls, hi)
        m = hi - lo - (q - p)  # tokens it emitted
        if p == q:
            runs = [first + lo, first + hi - 1] if lo < hi else []
        else:
            runs = [first + lo, first + stalls[p] - 1] if stalls[p] > lo else []
            runs += between[at[p]:at[q - 1]]
            if stalls[q - 1] + 1 < hi:
                runs += (first + stalls[q - 1] + 1, first + hi - 1)
        req.num_output_tokens += m
        if i < nd:
            req.num_computed_tokens += m
            own = req.token_steps
            if runs and own[-1] == first - 1 and runs[0] == first:  # (its run before the stretch goes on)
                own[-1] = runs[1]
                runs = runs[2:]
            own += runs
        else:
            req.num_computed_tokens += n + m - 1
            req.token_steps += runs
            if req.first_token_s is None:
                req.first_token_s = ends[lo]
    return prefill_tokens, list(prefill_at.items())
