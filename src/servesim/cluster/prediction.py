"""Predicted prefill and decode times from a replica's perf model (Mooncake's conductor).

Mooncake's conductor estimates each prefill instance's TTFT as its queue time (the predicted
prefill times of what is queued there) plus the new request's prefill of its uncached tokens,
and the decode load as the predicted time between tokens (TBT) of a decode batch. Mooncake
fits a polynomial regression offline; servesim asks the replica's own perf model (the same
pure functions the engine steps with), so predictions are exact for an isolated prefill and
approximate only in what they leave out (batching with other work).
"""

from __future__ import annotations

from servesim.perf.estimate import prefill_time_s


def prefill_s_per_token(perf, chunk_tokens: int) -> float:
    """Prefill time per token of a full chunk without context: the queue-time rate (Mooncake
    sums the predicted prefill times of queued requests; servesim prices their tokens)."""
    return perf.step_time_s([(chunk_tokens, 0)], ()) / chunk_tokens


def tbt_s(perf, num_seqs: float, context_tokens: int) -> float:
    """Time between tokens of a decode-only batch of `num_seqs` sequences (rounded up) of
    `context_tokens` each."""
    n = max(1, int(-(-num_seqs // 1)))
    return perf.step_time_s((), [context_tokens] * n)


class Predictor:
    """Predicted prefill times on each replica (the conductor's view of the prefill pool)."""

    def __init__(self, engines: list) -> None:
        self.engines = engines  # replica index -> engine (its perf model and engine arguments)
        self._rate: dict[int, tuple[object, float]] = {}  # index -> (perf, s per queued token)

    def queue_s(self, index: int, queued_tokens: int) -> float:
        """Predicted time to clear `queued_tokens` prompt tokens queued on replica `index`."""
        eng = self.engines[index]
        memo = self._rate.get(index)
        if memo is None or memo[0] is not eng.perf:  # (a power cap may swap the perf model)
            memo = self._rate[index] = (eng.perf, prefill_s_per_token(eng.perf, eng.config.max_num_batched_tokens))
        return queued_tokens * memo[1]

    def prefill_s(self, index: int, prompt_len: int, cached_tokens: int) -> float:
        """Predicted prefill time of a prompt with `cached_tokens` hit on replica `index`."""
        eng = self.engines[index]
        cached = min(cached_tokens, prompt_len - 1)  # the last prompt token is always computed
        return prefill_time_s(eng.perf, prompt_len - cached, cached, eng.config.max_num_batched_tokens)

    def ttft_s(self, index: int, queued_tokens: int, prompt_len: int, cached_tokens: int) -> float:
        """Mooncake's estimated TTFT on replica `index`: queue + prefill of the uncached part."""
        return self.queue_s(index, queued_tokens) + self.prefill_s(index, prompt_len, cached_tokens)
