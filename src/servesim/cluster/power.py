"""GPU power, energy and cost (pure functions).

Power per GPU follows splitwise-sim's constant model (spec §7.1): idle while a replica is up
and not stepping, its prefill ("prompt") power during steps that run prompt tokens, its
decode ("token") power during decode-only steps. Constants live in the GPU catalogue
(`idle_w`, `prefill_w`, `decode_w`, with sources); GPUs without measured constants use the
H100 shares of TDP (idle 11 %, prefill 100 %, decode 54 %). A stopped replica draws nothing;
a starting one draws idle power (its GPUs are allocated and loading).
"""

from __future__ import annotations

import numpy as np

from servesim.metrics.recorder import StepLog

STOPPED = "stopped"
#: Shares of TDP for GPUs without measured constants (splitwise-sim's H100: 75/700/380 W).
IDLE_SHARE, PREFILL_SHARE, DECODE_SHARE = 75 / 700, 1.0, 380 / 700


def gpu_power_w(gpu) -> tuple[float, float, float]:
    """(idle, prefill, decode) watts of one GPU of the catalogue."""
    tdp = gpu.tdp_w
    return (getattr(gpu, "idle_w", None) or IDLE_SHARE * tdp, getattr(gpu, "prefill_w", None) or PREFILL_SHARE * tdp,
            getattr(gpu, "decode_w", None) or DECODE_SHARE * tdp)


def up_intervals(lifecycle: list[tuple[float, str]], end_s: float) -> list[tuple[float, float]]:
    """[start, stop) intervals in which the replica holds GPUs (any state but stopped); an
    empty lifecycle means up from 0 to `end_s`."""
    if not lifecycle:
        return [(0.0, end_s)]
    out, since = [], None
    for t, state in lifecycle:
        if state == STOPPED and since is not None:
            out.append((since, t))
            since = None
        elif state != STOPPED and since is None:
            since = t
    if since is not None:
        out.append((since, max(end_s, since)))
    return [(a, min(b, end_s)) for a, b in out if min(b, end_s) > a]


def step_power_w(steps: StepLog, power: tuple[float, float, float], clock_log: list[tuple[float, float]] = (),
                 gamma: float = 2.5) -> np.ndarray:
    """Per-GPU power during each step (prefill power if the step ran prompt tokens), at the
    clock in force when the step started."""
    idle, prefill_w, decode_w = power
    phase = np.where(steps.prefill_tokens > 0, prefill_w, decode_w)
    if not clock_log:
        return phase
    return idle + (phase - idle) * clock_at(list(clock_log), steps.start_s) ** gamma


def replica_energy_j(steps: StepLog, up_s: float, power: tuple[float, float, float], num_gpus: int,
                     clock_log: list[tuple[float, float]] = (), gamma: float = 2.5) -> float:
    """Energy of one replica: idle power over its up time plus the excess of each step."""
    busy = steps.end_s - steps.start_s
    excess = float(((step_power_w(steps, power, clock_log, gamma) - power[0]) * busy).sum())  # not np.dot (see metrics/summary.stats)
    return num_gpus * (power[0] * up_s + excess)


def cost_usd(gpu_hours: float, price_usd_h: float) -> float:
    return gpu_hours * price_usd_h


def power_at_clock_w(power: tuple[float, float, float], phase_w: float, ratio: float, gamma: float) -> float:
    """Per-GPU power in a phase at clock `ratio`: idle + (phase - idle) x ratio^gamma."""
    return power[0] + (phase_w - power[0]) * ratio ** gamma


def clock_for_cap(power: tuple[float, float, float], cap_w: float, gamma: float) -> float:
    """The clock ratio at which the peak (prefill) power meets `cap_w` (1 if it already does)."""
    idle, peak = power[0], power[1]
    if cap_w >= peak:
        return 1.0
    return ((cap_w - idle) / (peak - idle)) ** (1.0 / gamma)


def clock_at(clock_log: list[tuple[float, float]], times_s: np.ndarray) -> np.ndarray:
    """The clock ratio in force at each time, from a log of (time, ratio) changes (1 before any)."""
    if not clock_log:
        return np.ones(len(times_s))
    t = np.array([c[0] for c in clock_log])
    r = np.concatenate(([1.0], [c[1] for c in clock_log]))
    return r[np.searchsorted(t, times_s, side="right")]
