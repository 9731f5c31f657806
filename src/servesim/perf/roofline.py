"""Pure cost formulas (shared/specs/perf-model.md §4). Seconds, bytes and FLOPs in, seconds out."""

from __future__ import annotations

import math


def smooth_roofline_s(flops: float, bytes_moved: float, peak_flops: float, bw_bytes_s: float,
                      eta_compute: float, eta_memory: float, smoothing_k: float) -> float:
    """Time of a kernel that must both compute `flops` and move `bytes_moved`.

    `((F/(eta_c*peak))^k + (B/(eta_m*bw))^k)^(1/k)`: k -> infinity is the classical
    max(compute, memory) roofline; k = 1-2 fits measured GEMMs better near the ridge point,
    where neither resource is saturated (spec §5).
    """
    return smooth_roofline_sum_s(((1, flops, bytes_moved, 0.0),), 1, eta_compute * peak_flops, eta_memory * bw_bytes_s,
                                 smoothing_k)  # (a sum of one kernel: 1 x t, t + 0.0 x 1 and 0.0 + t are exact)


def smooth_roofline_sum_s(kernels, num_tokens: int, compute_den: float, memory_den: float, smoothing_k: float) -> float:
    """Sum of count x `smooth_roofline_s` over `kernels`, (count, FLOPs per token, bytes, bytes per
    token) each, run on `num_tokens` tokens; the denominators eta_compute x peak and eta_memory x bw
    given (perf/terms.TokenTerms takes them once per deployment: the GEMM blocks of all layers)."""
    inv_k = 1.0 / smoothing_k
    total = 0.0
    for count, flops_per_token, bytes_moved, bytes_per_token in kernels:
        compute_s = flops_per_token * num_tokens / compute_den
        memory_s = (bytes_moved + bytes_per_token * num_tokens) / memory_den
        if compute_s == 0.0 or memory_s == 0.0:
            total += count * (compute_s + memory_s)
        else:
            total += count * (compute_s**smoothing_k + memory_s**smoothing_k) ** inv_k
    return total


def allreduce_s(message_bytes: float, num_gpus: int, link_bw_bytes_s: float, link_latency_s: float,
                launch_s: float, bw_eff: float, one_shot: bool = False, ring_bw_eff: float = 0.0) -> float:
    """Ring all-reduce (alpha-beta): launch + 2(n-1) hops + 2(n-1)/n of the message over the link.

    one_shot: the engine also has a one-shot all-reduce for small messages (vLLM's custom
    all-reduce, TensorRT-LLM's ONESHOT, SGLang's custom all-reduce on NVLink): every GPU reads all
    n-1 peers' buffers in one hop, launch + 1 hop + (n-1) messages; the engine picks the faster.
    ring_bw_eff: the ring's own share of the link bandwidth (NCCL's, on large messages) when > 0;
    bw_eff otherwise.
    """
    if num_gpus <= 1:
        return 0.0
    steps = 2 * (num_gpus - 1)
    ring_eff = ring_bw_eff if ring_bw_eff > 0.0 else bw_eff
    ring = launch_s + steps * link_latency_s + steps / num_gpus * message_bytes / (ring_eff * link_bw_bytes_s)
    if not one_shot:
        return ring
    return min(ring, launch_s + link_latency_s + (num_gpus - 1) * message_bytes / (bw_eff * link_bw_bytes_s))


def alltoall_s(message_bytes: float, num_gpus: int, link_bw_bytes_s: float, link_latency_s: float,
               launch_s: float, bw_eff: float) -> float:
    """All-to-all of `message_bytes` per GPU: (n-1)/n of it leaves the GPU."""
    if num_gpus <= 1:
        return 0.0
    return launch_s + link_latency_s + (num_gpus - 1) / num_gpus * message_bytes / (bw_eff * link_bw_bytes_s)


def p2p_s(message_bytes: float, link_bw_bytes_s: float, link_latency_s: float, launch_s: float) -> float:
    """One point-to-point transfer (pipeline stage hand-off)."""
    return launch_s + link_latency_s + message_bytes / link_bw_bytes_s


def experts_touched(num_experts: int, top_k: int, num_tokens: int) -> float:
    """Expected distinct experts hit by `num_tokens` tokens under uniform routing."""
    if num_tokens <= 0:
        return 0.0
    return num_experts * (1.0 - (1.0 - top_k / num_experts) ** num_tokens)


def experts_touched_busiest_rank(num_experts: int, top_k: int, num_tokens: int, ranks: int) -> float:
    """Expected distinct experts hit on the busiest of `ranks` expert-parallel ranks (uniform routing).

    With expert parallelism each rank holds num_experts / ranks whole experts and loads only those
    its tokens touch; the layer ends when the slowest rank does (its output is combined by an
    all-reduce or an all-to-all), so a small batch pays for the rank that drew the most experts,
    not for the mean. Each expert is taken as touched independently with the probability of
    `experts_touched`, so a rank's count is binomial over its experts and the expected maximum of
    `ranks` such counts is sum over x of (1 - P(count <= x)^ranks). It falls to the mean
    (`experts_touched / ranks`) as the batch touches every expert, and equals it for one rank.
    """
    per_rank = num_experts // ranks
    if num_tokens <= 0 or per_rank <= 0:
        return 0.0
    q = experts_touched(num_experts, top_k, num_tokens) / num_experts
    if ranks <= 1 or q >= 1.0:
        return per_rank * q
    log_q, log_p, log_n = math.log(q), math.log1p(-q), math.lgamma(per_rank + 1)
    expected_max, cdf = 0.0, 0.0
    for x in range(per_rank):  # the binomial's terms in logs: no overflow for thousands of experts a rank
        cdf += math.exp(log_n - math.lgamma(x + 1) - math.lgamma(per_rank - x + 1) + x * log_q + (per_rank - x) * log_p)
        tail = 1.0 - min(cdf, 1.0) ** ranks
        if tail == 0.0:
            break  # (cdf only grows: every later term is 0 too)
        expected_max += tail
    return expected_max


def causal_attention_pairs(new_tokens: int, cached_tokens: int, window: int | None) -> float:
    """Query-key pairs a prefill chunk computes: c*(p + c/2) (causal), each span capped at `window`."""
    span = cached_tokens + new_tokens / 2.0
    if window is not None and span > window:
        span = float(window)
    return new_tokens * span
