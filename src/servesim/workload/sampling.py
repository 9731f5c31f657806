"""Random draws made in numpy blocks and handed out one at a time (cheap per request)."""

from __future__ import annotations

import itertools
from typing import Callable, Iterator

import numpy as np

from servesim.workload.config_base import IntSpec

BLOCK = 4096  # values drawn per numpy call: amortises the call overhead, bounded memory


def stream(draw: Callable[[int], np.ndarray], block: int = BLOCK) -> Iterator:
    """An endless iterator over draw(block), draw(block), ... as Python scalars."""
    return itertools.chain.from_iterable(iter(lambda: draw(block).tolist(), None))


def int_spec_stream(spec: IntSpec, rng: np.random.Generator) -> Iterator[int]:
    """Fixed value, or uniform integers in [low, high] (both included)."""
    if isinstance(spec, int):
        return itertools.repeat(spec)
    low, high = spec
    return stream(lambda n: rng.integers(low, high + 1, size=n))


def think_time_stream(mean_s: float, dist: str, rng: np.random.Generator) -> Iterator[float]:
    """Think or tool times: fixed, or exponential with the given mean."""
    if dist == "fixed" or mean_s == 0:
        return itertools.repeat(float(mean_s))
    return stream(lambda n: rng.exponential(mean_s, size=n))


def choice_stream(weights: dict, rng: np.random.Generator) -> Iterator:
    """Keys of `weights` drawn with probability proportional to their values."""
    keys = list(weights)
    p = np.array([weights[k] for k in keys], dtype=float)
    p /= p.sum()
    if len(keys) == 1:
        return itertools.repeat(keys[0])
    return (keys[i] for i in stream(lambda n: rng.choice(len(keys), size=n, p=p)))
