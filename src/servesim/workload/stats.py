"""Summary statistics of a trace, computed in one streaming pass.

Keys (also of `servesim trace stats --json`): num_requests, duration_s, mean_rate_per_s,
peak_rate_per_s (busiest 1-s bin), peak_rate_per_min (busiest 60-s bin), interarrival_cv,
input_len / output_len ({mean, p50, p90, p99, max}; linear-interpolated percentiles),
and, when the trace has prefix hashes, prefix_reuse_ratio: the share of prompt blocks found
in an infinite prefix cache fed in file order (only the leading run of already-seen ids
counts, as a prefix cache would), with hash_block_tokens and num_blocks.
"""

from __future__ import annotations

import math
from array import array
from typing import Any, Iterable

import numpy as np

from servesim.workload.traces.readers import Row


class _PeakCounter:
    """Highest number of arrivals in fixed bins of `width_s`, aligned to the first arrival."""

    def __init__(self, width_s: float):
        self.width_s = width_s
        self.bin = None
        self.count = 0
        self.peak = 0

    def add(self, rel_s: float) -> None:
        b = int(rel_s // self.width_s)
        if b != self.bin:
            self.bin, self.count = b, 0
        self.count += 1
        if self.count > self.peak:
            self.peak = self.count


def _lengths(values: array) -> dict[str, float]:
    a = np.frombuffer(values, dtype=np.int64) if len(values) else np.zeros(1, dtype=np.int64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"mean": float(a.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99), "max": int(a.max())}


def trace_stats(rows: Iterable[Row]) -> dict[str, Any]:
    """Statistics of parsed rows (see the module docstring)."""
    prompts, outputs = array("q"), array("q")
    first = last = None
    n_gaps, gap_mean, gap_m2 = 0, 0.0, 0.0  # Welford's running mean/variance of gaps
    per_s, per_min = _PeakCounter(1.0), _PeakCounter(60.0)
    seen: set[int] = set()
    blocks = hits = 0
    block_tokens: int | None = None
    for t, prompt, output, hashes, block, _ in rows:
        prompts.append(prompt)
        outputs.append(output)
        if t is not None:
            if first is None:
                first = t
            else:
                gap = t - last  # type: ignore[operator]
                n_gaps += 1
                delta = gap - gap_mean
                gap_mean += delta / n_gaps
                gap_m2 += delta * (gap - gap_mean)
            last = t
            per_s.add(t - first)
            per_min.add(t - first)
        if hashes:
            block_tokens = block
            n_prompt = min(len(hashes), -(-prompt // block))
            blocks += n_prompt
            k = 0
            while k < n_prompt and hashes[k] in seen:
                k += 1
            hits += k
            seen.update(hashes)
    n = len(prompts)
    out: dict[str, Any] = {"num_requests": n}
    if first is not None and last is not None:
        span = last - first
        std = math.sqrt(gap_m2 / n_gaps) if n_gaps else 0.0
        out.update(
            duration_s=span,
            mean_rate_per_s=n / span if span > 0 else None,
            peak_rate_per_s=per_s.peak,
            peak_rate_per_min=per_min.peak,
            interarrival_cv=std / gap_mean if gap_mean > 0 else None,
        )
    out["input_len"] = _lengths(prompts)
    out["output_len"] = _lengths(outputs)
    if blocks:
        out.update(prefix_reuse_ratio=hits / blocks, hash_block_tokens=block_tokens, num_blocks=blocks,
                   num_unique_blocks=len(seen))
    return out
