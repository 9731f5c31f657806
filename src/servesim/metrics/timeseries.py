"""Fixed-interval time series from the raw step log (a pure function).

Levels (running, waiting, KV usage) are time-weighted means over each interval: a step holds
its level from its start to its end, an idle replica holds zero. Counts (arrivals,
completions, prompt and output tokens) are attributed to the interval in which they happen
(tokens at the end of their step).
"""

from __future__ import annotations

import numpy as np

from servesim.metrics.recorder import StepLog

COLUMNS = ("time_s", "interval_s", "arrivals", "finished", "prompt_tokens", "output_tokens",
           "num_running", "num_waiting", "kv_usage")


def _integral(edges: np.ndarray, starts: np.ndarray, ends: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Integral of a piecewise-constant level (zero between steps) from 0 to each edge."""
    area = np.concatenate(([0.0], np.cumsum(level * (ends - starts))))
    i = np.searchsorted(starts, edges, side="right")  # steps starting at or before the edge
    partial = np.zeros(len(edges))
    inside = i > 0
    j = i[inside] - 1
    partial[inside] = level[j] * np.clip(edges[inside] - starts[j], 0.0, ends[j] - starts[j])
    return area[np.maximum(i - 1, 0)] * inside + partial


def timeseries(logs: list[StepLog], arrival_s: np.ndarray, finish_s: np.ndarray,
               interval_s: float) -> dict[str, np.ndarray]:
    """The run's time series; with several replicas (one step log each) levels are summed and
    KV usage is the share of all replicas' blocks."""
    ends = [float(g.end_s[-1]) for g in logs if len(g)]
    end = max(max(ends, default=0.0), float(arrival_s.max()) if len(arrival_s) else 0.0)
    n = max(int(np.ceil(end / interval_s)), 1)
    edges = np.arange(n + 1) * interval_s
    cols = {"time_s": edges[:-1], "interval_s": np.full(n, interval_s)}

    def count(times: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        idx = np.minimum((times // interval_s).astype(np.int64), n - 1)
        return np.bincount(idx, weights=weights, minlength=n)[:n]

    cols["arrivals"] = count(arrival_s)
    cols["finished"] = count(finish_s[np.isfinite(finish_s)])
    cols["prompt_tokens"] = sum(count(g.end_s, g.prefill_tokens) for g in logs)
    cols["output_tokens"] = sum(count(g.end_s, g.output_tokens) for g in logs)
    total_blocks = sum(g.num_gpu_blocks for g in logs)
    for name in ("num_running", "num_waiting", "kv_usage"):
        cols[name] = sum(np.diff(_integral(edges, g.start_s, g.end_s, _level(g, name, total_blocks))) / interval_s
                         for g in logs)
    return cols


def _level(steps: StepLog, name: str, total_blocks: int) -> np.ndarray:
    return steps.kv_used_blocks / total_blocks if name == "kv_usage" else getattr(steps, name)
