"""The cheap first pass: memory fit, a static capacity estimate, and a zero-load bound.

Nothing here simulates; everything comes from the same performance model the simulation uses.

* Memory: vLLM's KV-cache sizing (`num_gpu_blocks`); a candidate fits when its cache holds the
  longest request of the workload sample.
* Static capacity, in the manner of AIConfigurator's aggregated mode: for each batch size b,
  a decode step of b sequences at the mean context, with the b prefills that arrive while one
  request decodes spread over its output (chunked-prefill interference); TTFT is the unloaded
  prefill time times 1.8 to stand in for queueing (AIConfigurator's fixed correction). The
  capacity is the best b / E2E among batches meeting both SLOs. No queueing is simulated.
* Zero-load bound: the share of requests whose unloaded prefill and single-sequence decode step
  already meet the SLOs. No rate can do better, so below the target the SLO is out of reach.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from servesim.perf import PerfConfig, PerfModel, build_perf_model
from servesim.perf.estimate import prefill_time_s
from servesim.planner.goodput import WorkloadShape
from servesim.planner.space import Candidate
from servesim.replica.config import EngineConfig, serve_batch_defaults

TTFT_QUEUEING_FACTOR = 1.8  # AIConfigurator's fixed TTFT correction for queueing


@dataclass(frozen=True)
class StaticEval:
    """First-pass verdict on one candidate (rates per replica, req/s)."""

    fits: bool
    reason: str  # why it does not fit ("" when it fits)
    kv_capacity_tokens: int
    capacity_per_s: float  # static rate meeting both SLOs (0 when no batch does)
    upper_per_s: float  # static throughput of the largest batch, SLOs ignored
    ttft_s: float  # static TTFT at the chosen batch (x 1.8)
    tpot_s: float  # static TPOT at the chosen batch
    batch: int  # chosen batch size
    zero_load_attainment: float  # upper bound on the SLO attainment at any rate


def build_candidate_perf(model: str, cand: Candidate, perf: PerfConfig) -> PerfModel:
    config = perf.model_copy(update={"expert_parallel": cand.expert_parallel}) if cand.expert_parallel else perf
    return build_perf_model(model, cand.gpu, cand.tp, cand.dtype, config, cand.pp)


def engine_limits(cand: Candidate, pm: PerfModel, engine: EngineConfig) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) as the simulation resolves them."""
    tokens, seqs = serve_batch_defaults(pm.gpu_name, pm.hbm_bytes)
    return (cand.max_num_batched_tokens or engine.max_num_batched_tokens or tokens,
            cand.max_num_seqs or engine.max_num_seqs or seqs)


def prefill_s(pm: PerfModel, prompt: int, budget: int, chunked: bool) -> float:
    """Unloaded prefill of one prompt, in budget-sized chunks when chunked prefill is on."""
    return prefill_time_s(pm, prompt, 0, budget if chunked else prompt)


def _share_below(sorted_values: np.ndarray, ok) -> float:
    """Share of a sorted sample whose values satisfy a predicate that holds up to a threshold."""
    lo, hi = 0, len(sorted_values)  # ok holds for the first `lo` values, fails from `hi` on
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(int(sorted_values[mid])):
            lo = mid + 1
        else:
            hi = mid
    return lo / len(sorted_values)


def static_eval(cand: Candidate, pm: PerfModel, engine: EngineConfig, shape: WorkloadShape,
                ttft_slo_s: float | None, tpot_slo_s: float | None) -> StaticEval:
    budget, max_seqs = engine_limits(cand, pm, engine)
    blocks = pm.num_gpu_blocks(engine.block_size, engine.gpu_memory_utilization, budget)
    kv_tokens = blocks * engine.block_size
    if kv_tokens < shape.max_request_tokens:
        why = (f"KV cache holds {kv_tokens} tokens, the longest request needs {shape.max_request_tokens}"
               if blocks else "the weights leave no room for a KV cache")
        return StaticEval(False, why, kv_tokens, 0.0, 0.0, 0.0, 0.0, 0, 0.0)
    ttft_t = ttft_slo_s if ttft_slo_s is not None else float("inf")
    tpot_t = tpot_slo_s if tpot_slo_s is not None else float("inf")
    chunked = cand.enable_chunked_prefill
    zero = _share_below(shape.prompt_tokens, lambda p: prefill_s(pm, p, budget, chunked) <= ttft_t
                        and pm.step_time_s([], [p]) <= tpot_t)
    prompt, output = max(1, round(shape.mean_prompt_tokens)), max(1, round(shape.mean_output_tokens))
    first_s = prefill_s(pm, prompt, budget, chunked)
    best = (0.0, 0.0, 0.0, 0)
    upper = 0.0
    batch = 1
    while batch <= max_seqs and batch * (prompt + output) <= kv_tokens:
        decode_s = pm.step_time_s([], [prompt + output // 2] * batch)
        tpot = decode_s + batch * first_s / output  # the b prefills that land during one request's decode
        rate = batch / (first_s + output * tpot)
        upper = max(upper, rate)
        if TTFT_QUEUEING_FACTOR * first_s <= ttft_t and tpot <= tpot_t and rate > best[0]:
            best = (rate, TTFT_QUEUEING_FACTOR * first_s, tpot, batch)
        batch = batch * 2 if batch * 2 <= max_seqs or batch == max_seqs else max_seqs
    return StaticEval(True, "", kv_tokens, best[0], upper, best[1], best[2], best[3], zero)
