"""Workloads: what requests arrive, when, and which follow-ups they cause.

    workload = build_workload(WorkloadConfig(trace=...), numpy.random.SeedSequence(0))
    for req in workload.arrivals(): ...              # open-loop requests, lazily, in time order
    workload.on_request_done(req, now_s)              # -> closed-loop follow-ups

See docs/workloads.md for the `workload:` scenario section.
"""

from __future__ import annotations

from typing import Iterator, Protocol

import numpy as np

from servesim.workload.config import WorkloadConfig
from servesim.workload.request import TERMINAL_STATES, Request, RequestState

__all__ = [
    "TERMINAL_STATES",
    "Request",
    "RequestState",
    "Workload",
    "WorkloadConfig",
    "build_workload",
]


class Workload(Protocol):
    """The contract between a workload and the simulation."""

    expected_num_requests: int | None
    """Total requests the workload will produce if known (for progress bars), else None."""
    skipped_rows: int
    """Malformed trace rows skipped so far (trace.skip_bad_rows); 0 for generated workloads."""
    closed_loop: bool
    """Whether on_request_done can return follow-ups (sessions, programs, closed-loop users).
    When it cannot, the engine may process finishes inside a fast-forwarded stretch late."""

    def arrivals(self) -> Iterator[Request]:
        """Open-loop requests with non-decreasing arrival_s, produced lazily."""
        ...

    def on_request_done(self, req: Request, now_s: float) -> list[Request]:
        """Called once when `req` reaches a terminal state; returns follow-ups (arrival_s >= now_s)."""
        ...


def build_workload(config: WorkloadConfig, seed: np.random.SeedSequence) -> Workload:
    """The workload described by `config`; the same seed gives identical requests."""
    if config.trace is not None:
        from servesim.workload.replay import TraceWorkload

        return TraceWorkload(config, seed)
    from servesim.workload.generated import GeneratedWorkload

    return GeneratedWorkload(config, seed)
