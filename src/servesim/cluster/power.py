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


def step_power_w(steps: StepLog, power: tuple[float, float, float]) -> np.ndarray:
    """Per-GPU power during each step (prefill power if the step ran prompt tokens)."""
    _, prefill_w, decode_w = power
    return np.where(steps.prefill_tokens > 0, prefill_w, decode_w)


def replica_energy_j(steps: StepLog, up_s: float, power: tuple[float, float, float], num_gpus: int) -> float:
    """Energy of one replica: idle power over its up time plus the excess of each step."""
    busy = steps.end_s - steps.start_s
    excess = float(np.dot(step_power_w(steps, power) - power[0], busy))
    return num_gpus * (power[0] * up_s + excess)


def cost_usd(gpu_hours: float, price_usd_h: float) -> float:
    return gpu_hours * price_usd_h
