"""Speculative decode steps priced a block at a time with numpy (`SpecStretch.price`).

While every request of the batch has more than `num_speculative_tokens` + 1 tokens left, each
step of a stretch is regular: every request speculates k = num_speculative_tokens drafts, emits
its accepted count + 1 tokens (it cannot finish), and the step's time depends on the batch's
context sum alone. A block of S such steps reads S x n acceptance rows at once (the same rows,
in the same order, that S steps would read one by one) and gets the contexts, KV blocks and
step times with cumulative sums: a few numpy calls for the whole block. The block ends before
its first step that is not regular (a request down to its last k + 1 tokens: stepping's own
rules take over there), before the first step whose blocks would not fit, or after the first
step that ends at or past the horizon, exactly where pricing step by step would stop.
Bit-identical to `SpecStretch._step` (tests/replica/test_spec_blocks.py).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from servesim.sums import left_sum

# A block costs about 35 numpy calls (~100 us on the 2-core machine) whatever its size; a step
# priced one by one about (2 + 0.7 n) us for n requests. Blocks are used when the steps expected
# in them, times (n + 3), reach this (about 50 steps for one request, 11 for sixteen).
BLOCK_MIN_WORK = 200
BLOCK_MAX_STEPS = 4096  # rows read ahead at most (a cut leaves the rest to stepping anyway)


class Block(NamedTuple):
    """The first `m` steps of a block (m may be 0 when the first does not fit)."""

    m: int
    ends_s: list[float]  # each step's end
    sizes: list[int]  # tokens emitted in each step
    emits: list[list[int]]  # per step, per request in batch order
    grants: list[list[tuple[int, int]]]  # per step, (request index, blocks) for those that grow
    alloc: list[int]  # blocks granted in the stretch by the end of each step
    tokens: list[int]  # per request, tokens emitted in the m steps
    held: list[int]  # per request, blocks held after them
    out_of_blocks: bool  # step m would not fit in the free blocks (the stretch ends there)


def least_block_steps(n: int) -> float:
    """Steps of `n` requests from which a block costs less than pricing them one by one."""
    return BLOCK_MIN_WORK / (n + 3)


def block_steps(n: int, to_horizon: float, room: Callable[[], int], acceptance_rate: float, k_max: int) -> int:
    """Steps to read for a block of `n` requests (0: price step by step): enough are expected
    before the horizon (`to_horizon` steps ahead, guessed from the last step's time) and before
    a request gets down to its last k + 1 tokens (`room()` tokens ahead, at the mean tokens a
    speculative decode emits, 1 + p + ... + p^k)."""
    least = least_block_steps(n)
    if to_horizon < least:
        return 0
    tokens = room()  # (after the cheap test: a pass over the batch)
    if tokens < least * left_sum(acceptance_rate ** j for j in range(k_max + 1)):
        return 0
    return int(min(tokens, to_horizon + 2, BLOCK_MAX_STEPS))


def block_step_times(verify, affine, n: int, k_max: int, draft_ratio: float):
    """Step times of regular steps of `n` requests by their context sum: `SpecStretch._step`'s
    verify pass (`PerfModel.verify_step_times_s`) plus draft term (`decode_affine`), term for
    term (None from the perf model: no exact form for those sums)."""
    base, g, cpu, overlap = affine(n)
    draft = draft_ratio * k_max

    def times(ctx_sums: np.ndarray) -> np.ndarray | None:
        v = verify(n, 1 + k_max, ctx_sums)
        if v is None:
            return None
        d = base + g * ctx_sums
        d = np.maximum(d, cpu) if overlap else d + cpu
        return v + draft * d

    return times


def regular_block(acc: np.ndarray, act: list[int], ctx0: list[int], rem0: list[int], held0: list[int],
                  k_max: int, block_size: int, alloc0: int, free_blocks: int, end0_s: float, horizon_s: float,
                  step_times) -> Block:
    """Price up to len(acc) regular steps from the stretch's state after its last priced step.

    `acc`: acceptance counts, one row of the batch per step (S x n, batch order); `act`: the
    requests' indices in the stretch; `ctx0`, `rem0`, `held0`: their contexts, tokens left and
    blocks held; `alloc0`: blocks granted so far; `step_times(ctx_sums)`: the step times by
    the batch's context sum before each step (verify pass plus draft term; None: none exact)."""
    S = acc.shape[0]
    emits = acc + 1  # accepted drafts + the target's token (k = k_max: nothing is capped)
    done = emits.cumsum(axis=0)  # tokens emitted by the end of each step
    left_min = (np.asarray(rem0) - done).min(axis=1)  # tokens left after each step, least in the batch
    # Step s is regular if its requests start it with more than k_max tokens left and none
    # finishes in it: the first j with left_min[j] <= k_max makes step j + 1 irregular, and
    # step j itself if someone finished in it.
    low = left_min <= k_max
    j = int(low.argmax()) if low.any() else S
    m_reg = min(S, j if j < S and left_min[j] < 1 else j + 1)
    before = done - emits  # tokens emitted before each step
    before += ctx0  # contexts before each step
    held = before
    held += k_max
    held //= block_size
    held += 1
    np.maximum(held, held0, out=held)  # blocks held after each step (needs only grow with the context)
    alloc = held.sum(axis=1)
    alloc += alloc0 - sum(held0)  # blocks granted in the stretch by the end of each step
    over = alloc > free_blocks
    m_fit = int(over.argmax()) if over.any() else S
    sizes = emits.sum(axis=1)
    ctx_sums = sizes.cumsum()
    ctx_sums -= sizes
    ctx_sums += sum(ctx0)  # the batch's context sum before each step
    ends = step_times(ctx_sums)
    if ends is None:  # (no exact vectorised form for these contexts: step by step)
        return Block(0, [], [], [], [], [], [0] * len(act), list(held0), False)
    ends[0] += end0_s
    ends = ends.cumsum()  # sequential, as stepping adds each step's time to the last end
    m_h = 1 + int(np.searchsorted(ends[:S - 1], horizon_s, side="left"))  # steps that start before the horizon
    m = min(m_reg, m_fit, m_h)
    if not m:  # the first step does not fit
        return Block(0, [], [], [], [], [], [0] * len(act), list(held0), True)
    grants = held[:m].copy()
    grants[1:] -= held[:m - 1]
    grants[:1] -= held0
    rows, cols = np.nonzero(grants)
    per_step: list[list[tuple[int, int]]] = [[] for _ in range(m)]
    for s, c, nb in zip(rows.tolist(), cols.tolist(), grants[rows, cols].tolist()):
        per_step[s].append((act[c], nb))
    return Block(m, ends[:m].tolist(), sizes[:m].tolist(), emits[:m].tolist(), per_step, alloc[:m].tolist(),
                 done[m - 1].tolist(), held[m - 1].tolist(), m_fit < min(m_reg, m_h))
