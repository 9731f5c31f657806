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


def timeseries(steps: StepLog, arrival_s: np.ndarray, finish_s: np.ndarray, interval_s: float) -> dict[str, np.ndarray]:
    end = max(float(steps.end_s[-1]) if len(steps) else 0.0, float(arrival_s.max()) if len(arrival_s) else 0.0)
    n = max(int(np.ceil(end / interval_s)), 1)
    edges = np.arange(n + 1) * interval_s
    cols = {"time_s": edges[:-1], "interval_s": np.full(n, interval_s)}

    def count(times: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        idx = np.minimum((times // interval_s).astype(np.int64), n - 1)
        return np.bincount(idx, weights=weights, minlength=n)[:n]

    cols["arrivals"] = count(arrival_s)
    cols["finished"] = count(finish_s[np.isfinite(finish_s)])
    cols["prompt_tokens"] = count(steps.end_s, steps.prefill_tokens)
    cols["output_tokens"] = count(steps.end_s, steps.output_tokens)
    for name, level in (("num_running", steps.num_running), ("num_waiting", steps.num_waiting),
                        ("kv_usage", steps.kv_used_blocks / steps.num_gpu_blocks)):
        cols[name] = np.diff(_integral(edges, steps.start_s, steps.end_s, level)) / interval_s
    return cols
