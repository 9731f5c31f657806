"""ServeGen-style multi-tenant arrivals from the per-client, per-10-minute-window fits.

Each client's inter-arrival times in a window follow its fitted Gamma or Weibull (shape, scale),
rescaled so that their mean is 1 / (window rate x scale factor), as upstream does; idle windows
have no arrivals. All clients' arrivals are merged window by window, so memory stays bounded by
one window's requests. The timeline repeats when a run outlasts the data (1 or 14 days).
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np

from servesim.errors import InputError
from servesim.workload.config import ArrivalConfig
from servesim.workload.servegen_data import WINDOW_S, ServeGenTraces, load_traces


def select_clients(traces: ServeGenTraces, top: int | None) -> np.ndarray:
    """Row indices of the clients to keep: all, or the `top` with the most requests."""
    totals = traces.rate.sum(axis=1)
    order = np.argsort(-totals, kind="stable")
    keep = order[: top or len(order)]
    return np.sort(keep[totals[keep] > 0])


def scale_factor(traces: ServeGenTraces, rows: np.ndarray, first_window: int, num_windows: int,
                 target_rate_per_s: float | None) -> float:
    """Multiplier on every rate so the aggregate mean over the generated windows is the target."""
    if target_rate_per_s is None:
        return 1.0
    idx = (first_window + np.arange(num_windows)) % traces.num_windows
    mean = traces.rate[np.ix_(rows, idx)].sum(axis=0).mean()
    if mean <= 0:
        raise InputError(f"ServeGen {traces.name}: the selected clients send nothing in the chosen windows")
    return target_rate_per_s / mean


def _window_iats(family: int, shape: float, scale: float, rate: float, n: int, rng: np.random.Generator) -> np.ndarray:
    if family == 1 and shape > 0 and scale > 0:
        draws = rng.gamma(shape, scale, size=n)
        mean = shape * scale
    elif family == 2 and shape > 0 and scale > 0:
        draws = scale * rng.weibull(shape, size=n)
        mean = scale * math.gamma(1 + 1 / shape)
    else:  # no fit: Poisson
        draws, mean = rng.exponential(1.0, size=n), 1.0
    return draws / (mean * rate)


def client_window_times(family: int, shape: float, scale: float, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Arrival offsets in [0, WINDOW_S) of one client in one window."""
    expected = rate * WINDOW_S
    n = int(expected * 1.2 + 5 * math.sqrt(expected) + 8)
    iats = _window_iats(family, shape, scale, rate, n, rng)
    # Start at a uniform fraction of the first gap (a renewal process observed from a random time).
    iats[0] *= rng.random()
    times = np.cumsum(iats)
    while times[-1] < WINDOW_S:  # rare: very bursty fits need more draws
        more = np.cumsum(_window_iats(family, shape, scale, rate, n, rng)) + times[-1]
        times = np.concatenate([times, more])
    return times[: np.searchsorted(times, WINDOW_S)]


def servegen_arrivals(cfg: ArrivalConfig, duration_s: float | None, rng: np.random.Generator) -> Iterator[tuple[float, str]]:
    """(arrival_s, tenant) in time order; tenant = '<model>/client-<id>'."""
    traces = load_traces(cfg.model)
    rows = select_clients(traces, cfg.top_clients)
    first = int(cfg.start_s // WINDOW_S)
    offset = cfg.start_s - first * WINDOW_S
    span = traces.num_windows if duration_s is None else math.ceil((duration_s + offset) / WINDOW_S)
    factor = scale_factor(traces, rows, first, min(span, traces.num_windows) if duration_s is None else span, cfg.rate_per_s)
    names = [f"{traces.name}/client-{traces.client_ids[r]}" for r in rows]
    k = 0
    while True:  # repeat the timeline when the run outlasts the data
        w = (first + k) % traces.num_windows
        base = k * WINDOW_S - offset
        times, who = [], []
        for i, r in enumerate(rows):
            rate = traces.rate[r, w] * factor
            if rate > 0:
                t = client_window_times(int(traces.family[r, w]), traces.shape[r, w], traces.scale[r, w], rate, rng)
                times.append(t)
                who.append(np.full(len(t), i))
        if times:
            t_all = np.concatenate(times) + base
            w_all = np.concatenate(who)
            order = np.argsort(t_all, kind="stable")
            for t, i in zip(t_all[order].tolist(), w_all[order].tolist()):
                if t >= 0:
                    yield t, names[i]
        k += 1
