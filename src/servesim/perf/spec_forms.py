"""The scalar form of a speculative verify step beside a prompt chunk (`PerfModel.chunk_verify_time_fn`).

Sarathi-style chunk steps with speculative decoding run one prompt chunk and, for each of the
batch's decodes, a verify chunk of 1 + k tokens over its context. A fast-forwarded run of such
steps (`replica/spec_stretch.py`) prices one per step; with every decode verifying the same
number of tokens the time depends on the chunk's cached context and the decodes' context sum
alone, so it is a closure over those two integers instead of `step_time_s` over the list of
chunks. Bit-identical: `step_time_s`'s float operations in its order, and the attention pairs
(multiples of 1/2) summed exactly while they stay below 2^52 (tests/perf/test_spec_forms.py).
"""

from __future__ import annotations

from typing import Callable

PAIRS_EXACT = 1 << 52  # twice the attention pairs stay below this: their float sum is exact


def chunk_verify_time_fn(pm, num_seqs: int, tokens_per_seq: int,
                         chunk: int) -> Callable[[int, int], float | None] | None:
    """For a `PerfModel` `pm`: (the chunk's cached context, the decodes' context sum) -> the
    time of step_time_s([(chunk, cached)] + [(tokens_per_seq, c) for c in ctxs], [], num_seqs) with
    len(ctxs) == num_seqs and sum(ctxs) == ctx_sum (None where the pair sum would round).
    None with sliding-window layers (the time then depends on each context)."""
    if pm._window is not None or num_seqs <= 0 or tokens_per_seq <= 0 or chunk <= 0 or pm._graphless:
        return None
    t, n = tokens_per_seq, num_seqs
    num_tokens, num_all = chunk + n * t, 1 + n
    base = pm._token_s(num_tokens) + pm._logits_s(num_all)
    pair_full, kv_read = pm._pair_full, pm._kv_read
    fixed = pm._prompt_fixed_s(chunk)  # the prompt chunk's alone: the verify chunks are decodes
    mixed = pm._mixed_s(chunk, n)  # (the chunk beside n decodes)
    full_layers = pm._layers[0]  # (no window: the windowed layers' pairs and reads are zero)
    half = chunk / 2.0
    verify_pairs2 = n * t * t  # twice the verify chunks' own pairs (2 t ctx_sum more over their contexts)
    cpu, overlap = pm.terms.cpu_s(num_all, num_tokens), pm._overlap

    def time_s(cached: int, ctx_sum: int) -> float | None:
        if 2 * chunk * cached + chunk * chunk + 2 * t * ctx_sum + verify_pairs2 >= PAIRS_EXACT:
            return None
        pairs = chunk * (cached + half)  # (`causal_attention_pairs(chunk, cached, None)`)
        pairs += (2 * t * ctx_sum + verify_pairs2) / 2.0
        attention = pair_full * pairs + kv_read * (full_layers * (cached + ctx_sum))
        gpu = base + ((attention + fixed) + mixed)  # (no plain decodes: their term is zero)
        return max(gpu, cpu) if overlap else gpu + cpu

    return time_s
