"""Static-batch estimates, the way vendors benchmark: all requests start together and run to completion.

Prefill runs first, in iterations of at most the engine's token budget (`max_num_tokens`), each
request producing its first token when its prompt is done; then every request decodes together,
one token per iteration, with its context growing by one each step.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from servesim.errors import InputError
from servesim.perf.engines import EngineProfile
from servesim.perf.perf_model import PerfModel
from servesim.sums import left_sum

BLOCK_SIZE = 16  # KV block size used to count what fits (vLLM's default)


def prefill_time_s(perf, num_new_tokens: int, num_cached_tokens: int, chunk_tokens: int) -> float:
    """Time to prefill `num_new_tokens` after `num_cached_tokens` cached ones, in chunks of at
    most `chunk_tokens` (the engine's `max_num_batched_tokens`), nothing else in the batch."""
    t_s, done, left = 0.0, num_cached_tokens, num_new_tokens
    while left > 0:
        n = min(left, chunk_tokens)
        t_s += perf.step_time_s([(n, done)], ())
        done += n
        left -= n
    return t_s


@dataclass(frozen=True)
class Estimate:
    """Result of one static-batch run (seconds and tokens per second)."""

    model: str
    gpu: str
    tp: int
    pp: int
    dtype: str
    engine: str
    batch: int
    input_len: int
    output_len: int
    ttft_s: float  # mean time to first token
    ttft_max_s: float  # first token of the last request prefilled
    tpot_s: float  # mean time per output token after the first
    e2e_s: float  # time until every request has finished
    output_throughput_tok_s: float  # batch * output_len / e2e_s, whole TP x PP group
    output_throughput_per_gpu_tok_s: float
    input_throughput_tok_s: float
    request_throughput_req_s: float
    kv_capacity_tokens: int  # per replica, at the engine's memory fraction
    fits_in_memory: bool  # batch * (input_len + output_len) tokens fit the KV cache

    def to_dict(self) -> dict:
        return asdict(self)


def kv_capacity_tokens(pm: PerfModel, engine: EngineProfile) -> int:
    return pm.num_gpu_blocks(BLOCK_SIZE, engine.kv_fraction, engine.max_num_tokens) * BLOCK_SIZE


def max_batch_that_fits(pm: PerfModel, engine: EngineProfile, input_len: int, output_len: int) -> int:
    """Largest batch whose full sequences fit the KV cache (reserved up front, as TRT-LLM's
    GUARANTEED_NO_EVICT does), capped at the engine's max_batch_size."""
    blocks = pm.num_gpu_blocks(BLOCK_SIZE, engine.kv_fraction, engine.max_num_tokens)
    per_request = math.ceil((input_len + output_len) / BLOCK_SIZE)
    batch = min(engine.max_batch_size, blocks // per_request)
    if batch < 1:
        raise InputError(
            f"{pm.model_name} on {pm.tp * pm.pp}x {pm.gpu_name} ({pm.dtype}) has room for {blocks * BLOCK_SIZE} KV tokens, "
            f"not one request of {input_len + output_len}; allowed: more GPUs (tp/pp), a smaller dtype or shorter requests")
    return batch


def prefill_times_s(pm: PerfModel, batch: int, input_len: int, token_budget: int) -> list[float]:
    """End time of the prefill of each request when prompts are packed into budget-sized steps."""
    done: list[float] = []
    clock = 0.0
    remaining = [input_len] * batch
    index = 0
    while index < batch:
        chunks: list[tuple[int, int]] = []
        finishing = 0
        budget = token_budget
        i = index
        while i < batch and budget > 0:
            take = min(remaining[i], budget)
            chunks.append((take, input_len - remaining[i]))
            remaining[i] -= take
            budget -= take
            if remaining[i] == 0:
                finishing += 1
            i += 1
        clock += pm.step_time_s(chunks, [])
        done.extend([clock] * finishing)
        index += finishing
    return done


def estimate(pm: PerfModel, engine: EngineProfile, batch: int, input_len: int, output_len: int,
             token_budget: int | None = None) -> Estimate:
    """Static-batch estimate; `token_budget` defaults to the engine's max_num_tokens."""
    for name, value, low in (("batch", batch, 1), ("input_len", input_len, 1), ("output_len", output_len, 1)):
        if value < low:
            raise InputError(f"{name} must be >= {low}, got {value}")
    budget = token_budget if token_budget is not None else max(engine.max_num_tokens, input_len)
    firsts = prefill_times_s(pm, batch, input_len, budget)
    prefill_end = firsts[-1]
    decode_s = float(pm.decode_step_times_s(np.full(batch, input_len, dtype=np.int64), output_len - 1).sum())
    e2e = prefill_end + decode_s
    gpus = pm.tp * pm.pp
    capacity = kv_capacity_tokens(pm, engine)
    per_request = math.ceil((input_len + output_len) / BLOCK_SIZE) * BLOCK_SIZE
    return Estimate(
        model=pm.model_name, gpu=pm.gpu_name, tp=pm.tp, pp=pm.pp, dtype=pm.dtype, engine=pm.engine,
        batch=batch, input_len=input_len, output_len=output_len,
        ttft_s=left_sum(firsts) / batch, ttft_max_s=prefill_end,
        tpot_s=decode_s / (output_len - 1) if output_len > 1 else 0.0,
        e2e_s=e2e,
        output_throughput_tok_s=batch * output_len / e2e,
        output_throughput_per_gpu_tok_s=batch * output_len / e2e / gpus,
        input_throughput_tok_s=batch * input_len / e2e,
        request_throughput_req_s=batch / e2e,
        kv_capacity_tokens=capacity,
        fits_in_memory=batch * per_request <= capacity,
    )
