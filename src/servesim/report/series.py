"""Pure numpy helpers that shape run data into what the plots draw (no plotting here)."""

from __future__ import annotations

import math

import numpy as np

from servesim.report.load import RunData

#: Upper bound on points per drawn curve; keeps pages small for runs with millions of requests.
MAX_POINTS = 2000
#: Upper bound on time-series intervals drawn; finer series are merged (exactly) so that a
#: long run's per-second noise does not hide its trends.
MAX_INTERVALS = 500
#: Time-series columns that are counts in an interval (summed when merging intervals).
_COUNT_COLUMNS = ("arrivals", "finished", "prompt_tokens", "output_tokens", "cost_usd")
#: Time-series columns that are time-weighted means over an interval (weighted when merging).
_LEVEL_COLUMNS = ("num_running", "num_waiting", "kv_usage", "num_replicas", "power_w")


def cdf_points(values: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Empirical CDF of the finite `values`: sorted x and cumulative fraction y in (0, 1].

    With more than `max_points` values, evenly spaced ranks are kept; the first and last rank
    are always among them, so the minimum and maximum are exact.
    """
    x = np.sort(np.asarray(values, dtype=float)[np.isfinite(values)])
    n = len(x)
    y = np.arange(1, n + 1, dtype=float) / max(n, 1)
    if n > max_points >= 2:
        ranks = np.unique(np.round(np.linspace(0, n - 1, max_points)).astype(np.int64))
        x, y = x[ranks], y[ranks]
    return x, y


def latency_values(run: RunData, column: str, mask: np.ndarray | None = None) -> np.ndarray:
    """Finite values of a latency column (seconds) over finished requests, optionally masked."""
    values = run.requests.get(column)
    if values is None:
        return np.empty(0)
    keep = np.isfinite(values)
    state = run.requests.get("state")
    if state is not None:
        keep &= state == "finished"
    if mask is not None:
        keep &= mask
    return values[keep]


def group_masks(run: RunData, column: str) -> dict[str, np.ndarray]:
    """One boolean mask per distinct non-empty value of a text column (e.g. tenant)."""
    labels = run.requests.get(column)
    if labels is None:
        return {}
    names = sorted({str(v) for v in labels if str(v)})
    return {name: labels == name for name in names}


def share_within(values: np.ndarray, limit: float) -> float:
    """Fraction of `values` at or below `limit` (NaN when there are none)."""
    return float(np.mean(values <= limit)) if len(values) else math.nan


def rebin_timeseries(ts: dict[str, np.ndarray], max_points: int = MAX_INTERVALS) -> dict[str, np.ndarray]:
    """Merge consecutive intervals so at most `max_points` remain; exact sums and weighted means."""
    n = len(ts.get("time_s", ()))
    if n <= max_points or "interval_s" not in ts:
        return ts
    factor = math.ceil(n / max_points)
    starts = np.arange(0, n, factor)
    widths = np.add.reduceat(np.nan_to_num(ts["interval_s"]), starts)
    out = {"time_s": ts["time_s"][starts], "interval_s": widths}
    for name in _COUNT_COLUMNS:
        if name in ts:
            out[name] = np.add.reduceat(np.nan_to_num(ts[name]), starts)
    for name in _LEVEL_COLUMNS:
        if name in ts:
            weighted = np.add.reduceat(np.nan_to_num(ts[name] * ts["interval_s"]), starts)
            out[name] = np.divide(weighted, widths, out=np.full(len(widths), np.nan), where=widths > 0)
    return out


def rate(ts: dict[str, np.ndarray], column: str) -> np.ndarray | None:
    """A count column divided by the interval length (per second); None if absent."""
    if column not in ts or "interval_s" not in ts:
        return None
    widths = ts["interval_s"]
    return np.divide(ts[column], widths, out=np.full(len(widths), np.nan), where=widths > 0)
