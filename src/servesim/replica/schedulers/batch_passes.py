"""Per-step passes of the policies over their running batch, written for long batches.

Under overload (hundreds of running requests, a decision every step) such passes were most
of `sglang`'s and `trtllm`'s time: a Python `min`/`max` and a property call per running
request per step. They return exactly what the per-request expressions did (for floats: the
same products, added by Python's `sum` in the same order).
"""

from __future__ import annotations

import numpy as np

from servesim.sums import left_sum
from servesim.workload.request import Request

CLIP_MAX_NEW_TOKENS = 4096  # SGLANG_CLIP_MAX_NEW_TOKENS_ESTIMATION

# Below this many running requests the plain expression is cheaper than building arrays.
_ARRAY_MIN_RUNNING = 24


def reserved_tokens(running: list[Request], ratio: float, max_model_len: int) -> float | int:
    """SGLang's decode reserve: the sum over `running` of
    `min(max(max_new - generated, 0), 4096) * new_token_ratio`, `max_new` being the request's
    `max_tokens`, else `max_model_len - prompt`. Same value as the list comprehension (the
    products are the same IEEE operations on the same numbers, summed left to right: `left_sum`)."""
    if len(running) < _ARRAY_MIN_RUNNING:
        return left_sum([min(max((r.max_tokens or max_model_len - r.prompt_len) - r.num_output_tokens, 0),
                             CLIP_MAX_NEW_TOKENS) * ratio for r in running])
    n = len(running)
    max_new = np.fromiter([r.max_tokens or max_model_len - r.prompt_len for r in running], np.int64, n)
    left = max_new - np.fromiter([r.num_output_tokens for r in running], np.int64, n)
    np.maximum(left, 0, out=left)
    np.minimum(left, CLIP_MAX_NEW_TOKENS, out=left)
    return left_sum((left * ratio).tolist())


def decoding_requests(running: list[Request]) -> list[Request]:
    """The running requests with only their last generated token left to compute
    (`Request.is_decoding`, inlined: one property call per running request per step)."""
    return [r for r in running
            if r.num_output_tokens > 0 and r.prompt_len + r.num_output_tokens - r.num_computed_tokens == 1]
