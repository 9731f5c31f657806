"""The forms of a prompt chunk's step beside decodes: `ChunkFormsMixin`, inherited by `PerfModel`.

A fast-forwarded prompt (`replica/chunk_stretch.py`, `chunk_rest.py`, an arrival joining a
stretch) runs steps of one chunk beside decodes whose count is fixed. Without sliding-window
layers the step's time depends on the chunk's cached context and the decodes' context sum alone,
so these price it from those two integers instead of `step_time_s` over the list of contexts:
a closure per (decodes, chunk) (`chunk_time_fn`), a run of successive chunks (`chunk_run_fn`),
one step without a closure (`prompt_step_s`), and a step with several prompts
(`prompts_step_s`). Bit-identical: `step_time_s`'s float operations in its order
(tests/perf/test_chunk_time_fn.py).
"""

from __future__ import annotations

from typing import Callable, Sequence


CHUNK_FNS = 4096  # `chunk_time_fn`'s memo entries at most (a few hundred batch sizes in use)


class ChunkFormsMixin:
    """Prompt-chunk step times of a `PerfModel` (its memoised terms and floats: `_token_s`, `_pair_full`, ...)."""

    def chunk_time_fn(self, num_decodes: int, chunk: int) -> Callable[[int, int], float] | None:
        """For a step of one prompt chunk of `chunk` tokens beside `num_decodes` decodes:
        (the chunk's cached context, the decodes' context sum) -> step time.

        Bit-identical to step_time_s([(chunk, cached)], ctxs) for any `num_decodes` ctxs with
        that sum: `step_time_s`'s float operations in the same order (a fast-forwarded prompt's
        successive chunks, `replica/chunk_stretch.py`; tests/perf/test_chunk_time_fn.py keeps
        the two in step). None with sliding-window layers (the decodes' time is not a function
        of their sum). Memoised: a Sarathi arrival joining with chunks asks for the same few
        (decodes, budget they leave) at every join (about 2 a request at 8 replicas); the memo
        is emptied past `CHUNK_FNS` entries, so callers asking for arbitrary prompt lengths
        do not make it grow without bound."""
        fns = self._chunk_fns
        f = fns.get((num_decodes, chunk), False)
        if f is not False:
            return f
        if len(fns) >= CHUNK_FNS:
            fns.clear()
        f = fns[num_decodes, chunk] = self._chunk_time_fn(num_decodes, chunk)
        return f

    def _chunk_time_fn(self, num_decodes: int, chunk: int) -> Callable[[int, int], float] | None:
        """`chunk_time_fn`, built."""
        if self._window is not None or chunk <= 0 or num_decodes < 0 or self._graphless:
            return None
        num_tokens, num_seqs = chunk + num_decodes, 1 + num_decodes
        base = self._token_s(num_tokens) + self._logits_s(num_seqs)
        pair_full, pair_win, kv_read, g = self._pair_full, self._pair_win, self._kv_read, self._g_full
        full_layers = self._layers[0]
        half = chunk / 2.0
        cpu = self.terms.cpu_s(num_seqs, num_tokens)
        fixed = self._prompt_fixed_s(chunk)

        mixed = self._mixed_s(chunk, num_decodes)

        def attention_s(cached: int) -> float:  # `_prefill_attention_s([(chunk, cached)], chunk)` + `_mixed_s`, no window
            return pair_full * (0.0 + chunk * (cached + half)) + pair_win * 0.0 + kv_read * (full_layers * cached) + fixed + mixed

        if self._overlap:
            return lambda cached, ctx_sum: max(base + attention_s(cached) + g * ctx_sum, cpu)
        return lambda cached, ctx_sum: base + attention_s(cached) + g * ctx_sum + cpu

    def chunk_run_fn(self, num_decodes: int, chunk: int) -> Callable[..., tuple[int, float]] | None:
        """`chunk_time_fn`'s steps priced a run at a time (memoised by its arguments): run(t,
        cached, ctx_sum, steps, horizon, ends) takes steps i = 0, 1, ... whose chunk has `cached
        + i * chunk` tokens cached and whose decodes' contexts sum to `ctx_sum + i * num_decodes`,
        while fewer than `steps` are taken and `t` (the end of the last) is below `horizon`;
        appends each step's end to `ends` and returns (steps taken, t). The same floats as
        `t += chunk_time_fn(num_decodes, chunk)(cached, ctx_sum)` step by step (its expression
        written out in the loop: a chunk stretch's steps, about 26 a Mooncake prompt, without
        two Python calls each). None where `chunk_time_fn` is None."""
        key = (num_decodes, chunk)
        runs = self._chunk_runs
        if key in runs:
            return runs[key]
        if self._window is not None or chunk <= 0 or num_decodes < 0 or self._graphless:
            run = None
        else:
            n, num_tokens = num_decodes, chunk + num_decodes
            base = self._token_s(num_tokens) + self._logits_s(1 + num_decodes)
            pair_full, pair_win, kv_read, g = self._pair_full, self._pair_win, self._kv_read, self._g_full
            full_layers = self._layers[0]
            half = chunk / 2.0
            cpu = self.terms.cpu_s(1 + num_decodes, num_tokens)
            fixed = self._prompt_fixed_s(chunk)
            mixed = self._mixed_s(chunk, num_decodes)
            overlap = self._overlap

            def run(t: float, cached: int, ctx_sum: int, steps: int, horizon: float, ends: list) -> tuple[int, float]:
                append, k = ends.append, 0
                while k < steps and t < horizon:
                    # `chunk_time_fn`'s floats: base + attention_s(cached) + g * ctx_sum (+ cpu, or max)
                    x = base + (pair_full * (0.0 + chunk * (cached + half)) + pair_win * 0.0
                                + kv_read * (full_layers * cached) + fixed + mixed) + g * ctx_sum
                    t += max(x, cpu) if overlap else x + cpu
                    append(t)
                    k += 1
                    cached += chunk
                    ctx_sum += n
                return k, t
        runs[key] = run
        return run

    def prompt_step_s(self, num_decodes: int, prompt: int, ctx_sum: int, cached: int = 0) -> float | None:
        """`chunk_time_fn(num_decodes, prompt)(cached, ctx_sum)` without building the form: one
        prompt of `prompt` tokens past `cached` beside `num_decodes` decodes whose contexts sum
        to `ctx_sum` (an arrival joining a stretch, once per arrival: the form would be used
        once). The same float operations in the same order; None where `chunk_time_fn` is None."""
        if self._window is not None or prompt <= 0 or num_decodes < 0 or self._graphless:
            return None
        # (once per arrival at a busy replica: the memos read here, `_prompt_fixed_s`, `_mixed_s` and
        # `StepTerms.cpu_s` written out, five calls fewer; the same float operations in the same order)
        tokens, seqs = prompt + num_decodes, 1 + num_decodes
        tok = self._tok.get(tokens)
        if tok is None:
            tok = self._token_s(tokens)
        logit = self._logit.get(seqs)
        if logit is None:
            logit = self._logits_s(seqs)
        mixed = self._mixed * self._token_s(prompt) if num_decodes > 0 and self._mixed > 0.0 else 0.0
        x = (tok + logit
             + (self._pair_full * (0.0 + prompt * (cached + prompt / 2.0)) + self._pair_win * 0.0
                + self._kv_read * (self._layers[0] * cached) + (self._lin_tok * prompt + self._eager) + mixed)
             + self._g_full * ctx_sum)
        step, per_seq, per_token = self._cpu_terms
        cpu = step + per_seq * seqs + per_token * tokens
        return max(x, cpu) if self._overlap else x + cpu

    def prompts_step_s(self, prefills: Sequence[tuple[int, int]], num_decodes: int, ctx_sum: int) -> float | None:
        """`step_time_s(prefills, ctxs)` for `num_decodes` decodes whose contexts sum to `ctx_sum`,
        without their list: the same float operations in the same order (without sliding-window
        layers the decodes enter only through their count and their contexts' sum). For a step
        priced from a stretch's scalar state with two prompts in it (one's last chunk, the next
        one's first: `replica/chunk_join.py`'s `chain_join`). None with sliding-window layers."""
        if self._window is not None:
            return None
        num_tokens = num_decodes
        for new, _ in prefills:
            num_tokens += new
        if num_tokens == 0:
            return 0.0
        num_seqs = len(prefills) + num_decodes
        gpu = self._token_s(num_tokens) + self._logits_s(num_seqs)
        if prefills:
            gpu = gpu + (self._prefill_attention_s(prefills, num_tokens - num_decodes)
                         + self._mixed_s(num_tokens - num_decodes, num_decodes))
        gpu = gpu + self._g_full * ctx_sum
        if self._graphless and num_tokens > self.graph_max_tokens:
            gpu = max(gpu + self._graphless_add, self._floor)
        cpu = self.terms.cpu_s(num_seqs, num_tokens)
        return max(gpu, cpu) if self._overlap else gpu + cpu
