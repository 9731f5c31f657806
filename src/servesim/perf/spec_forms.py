"""The forms of speculative verify steps: `VerifyFormsMixin`, inherited by `PerfModel`.

Verify steps alone (`verify_step_times_s`, `verify_time_fn`), a verify step beside a prompt
chunk (`chunk_verify_time_fn`), and any verify step by its sums (`verify_sums_time_fn`).

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

import numpy as np

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


def verify_sums_time_fn(pm) -> Callable[..., float | None] | None:
    """For a `PerfModel` `pm`: the time of a speculative step from sums over its chunks, for the
    steps the forms above do not cover: verify chunks of different lengths (requests with k or
    fewer tokens left verify fewer), plain decodes beside them (a request's last token), prompts
    first in the pass (prompts joining a stretch). The arguments: the step's sequences and tokens,
    twice the chunks' attention pairs (sum of n * (2 * cached + n) over prompt and verify chunks of
    n new tokens), their cached tokens, the plain decodes' context sum and the prompts' tokens.
    Bit-identical to step_time_s(prompts + verify chunks, plain decode contexts, number of verify
    chunks) when at least one chunk verifies: the pairs are multiples of 1/2 summed exactly below
    2^52 (None past it), and the rest is `_verify_chunks_s`' and `step_time_s`' float operations
    in their order. None with sliding-window layers or graphless steps (then by each context)."""
    if pm._window is not None or pm._graphless:
        return None
    pair_full, pair_win, kv_read, g = pm._pair_full, pm._pair_win, pm._kv_read, pm._g_full
    full_layers, win_layers = pm._layers
    token_s, logits_s, cpu_s, overlap = pm._token_s, pm._logits_s, pm.terms.cpu_s, pm._overlap
    prompt_fixed_s, mixed_s = pm._prompt_fixed_s, pm._mixed_s

    def time_s(num_seqs: int, num_tokens: int, pairs2: int, cached: int, decode_sum: int,
               prompt_tokens: int = 0) -> float | None:
        if pairs2 >= PAIRS_EXACT:
            return None
        pairs = pair_full * (pairs2 / 2.0) + pair_win * 0.0 + kv_read * (full_layers * cached + win_layers * 0)
        if prompt_tokens:
            pairs = pairs + prompt_fixed_s(prompt_tokens)
        gpu = token_s(num_tokens) + logits_s(num_seqs)
        gpu = gpu + (pairs + mixed_s(prompt_tokens, num_seqs))  # (its decode count > 0 as with the chunks')
        gpu = gpu + g * decode_sum
        cpu = cpu_s(num_seqs, num_tokens)
        return max(gpu, cpu) if overlap else gpu + cpu

    return time_s


class VerifyFormsMixin:
    """Verify-step times of a `PerfModel` (its memoised terms and floats: `_token_s`, `_pair_full`, ...)."""

    def verify_step_times_s(self, num_seqs: int, tokens_per_seq: int, ctx_sums: np.ndarray) -> np.ndarray | None:
        """Times of steps in which each of `num_seqs` sequences runs one `tokens_per_seq`-token
        chunk over its context (a speculative verify pass), one step per total context in
        `ctx_sums`. Bit-identical to step_time_s([(tokens_per_seq, c) for c in ctxs], [], num_seqs)
        for any ctxs summing to that total: the chunks' attention pairs, t * (c + t / 2), are
        multiples of 1/2 summed exactly, and the rest is that method's float operations in its
        order (no prompt-only term: the chunks are verify chunks). None with sliding-window
        layers (the time then depends on each context)."""
        if self._window is not None or num_seqs <= 0 or tokens_per_seq <= 0 or self._graphless:
            return None
        t, n = tokens_per_seq, num_seqs
        ctx_sums = np.asarray(ctx_sums, dtype=np.int64)
        if int(ctx_sums.max(initial=0)) * 2 * t >= 1 << 52:
            return None  # (pair sums no longer exact in floats: the scalar path's own rounding)
        num_tokens = n * t
        pairs = (2 * t * ctx_sums + n * t * t) / 2.0  # exact: what the scalar loop sums
        full_layers, win_layers = self._layers
        attention = self._pair_full * pairs
        attention += self._pair_win * 0.0
        attention += self._kv_read * (full_layers * ctx_sums + win_layers * 0)
        gpu = self._token_s(num_tokens) + self._logits_s(n)
        gpu = gpu + attention
        gpu += self._g_full * 0  # (no plain decodes)
        cpu = self.terms.cpu_s(n, num_tokens)
        if self._overlap:
            return np.maximum(gpu, cpu, out=gpu)
        gpu += cpu
        return gpu

    def verify_time_fn(self, num_seqs: int, tokens_per_seq: int) -> Callable[[int], float] | None:
        """`verify_step_times_s` for one total context at a time, as a scalar function
        (ctx_sum -> step time; the same float operations in the same order, so bit-identical
        to step_time_s([(tokens_per_seq, c) for c in ctxs], [], num_seqs) with sum(ctxs) == ctx_sum);
        it returns None for a total whose pair sum is no longer exact in floats. None with
        sliding-window layers. Memoised."""
        fn = self._verify_fns.get((num_seqs, tokens_per_seq), False)
        if fn is False:
            fn = self._verify_fns[num_seqs, tokens_per_seq] = self._verify_time_fn(num_seqs, tokens_per_seq)
        return fn

    def _verify_time_fn(self, num_seqs: int, tokens_per_seq: int) -> Callable[[int], float] | None:
        if self._window is not None or num_seqs <= 0 or tokens_per_seq <= 0 or self._graphless:
            return None
        t, n = tokens_per_seq, num_seqs
        full_layers, win_layers = self._layers
        pair_full, pair_win, kv_read, g = self._pair_full, self._pair_win, self._kv_read, self._g_full
        base = self._token_s(n * t) + self._logits_s(n)
        cpu, overlap = self.terms.cpu_s(n, n * t), self._overlap

        def time_s(ctx_sum: int) -> float | None:
            if 2 * t * ctx_sum >= 1 << 52:
                return None  # (as `verify_step_times_s`)
            attention = pair_full * ((2 * t * ctx_sum + n * t * t) / 2.0)
            attention += pair_win * 0.0
            attention += kv_read * (full_layers * ctx_sum + win_layers * 0)
            gpu = base + attention
            gpu += g * 0
            return max(gpu, cpu) if overlap else gpu + cpu

        return time_s

    def verify_sums_time_fn(self):
        """`verify_sums_time_fn` of this model (`perf/spec_forms.py`), memoised."""
        fn = self._verify_fns.get("sums", False)
        if fn is False:
            fn = self._verify_fns["sums"] = verify_sums_time_fn(self)
        return fn

    def chunk_verify_time_fn(self, num_seqs: int, tokens_per_seq: int, chunk: int):
        """A prompt chunk beside verify chunks as a scalar form (`perf/spec_forms.py`), memoised."""
        fn = self._verify_fns.get(key := (num_seqs, tokens_per_seq, chunk), False)
        if fn is False:
            fn = self._verify_fns[key] = chunk_verify_time_fn(self, num_seqs, tokens_per_seq, chunk)
        return fn
