"""Helpers for workload tests: a tiny fake driver standing in for the simulation."""

from __future__ import annotations

import heapq

import numpy as np


from servesim.workload import Request, RequestState, Workload, WorkloadConfig, build_workload


def make(config: dict, seed: int = 0) -> Workload:
    return build_workload(WorkloadConfig.model_validate(config), np.random.SeedSequence(seed))


def drive(workload: Workload, service_s=lambda r: 0.01 * r.output_len, fail=lambda r: False) -> list[Request]:
    """Run a workload with infinite capacity: each request finishes `service_s(r)` after it
    arrives (or is rejected at arrival when `fail(r)`). Returns all requests in issue order."""
    done: list[tuple[float, int, Request]] = []
    out: list[Request] = []
    seq = 0
    arrivals = iter(workload.arrivals())
    pending = next(arrivals, None)

    def admit(r: Request) -> None:
        nonlocal seq
        out.append(r)
        if fail(r):
            r.state = RequestState.REJECTED
            r.finish_s = r.arrival_s
        else:
            r.state = RequestState.FINISHED
            r.first_scheduled_s = r.arrival_s
            r.finish_s = r.arrival_s + service_s(r)
        heapq.heappush(done, (r.finish_s, seq, r))
        seq += 1

    while pending is not None or done:
        if pending is not None and (not done or pending.arrival_s <= done[0][0]):
            admit(pending)
            pending = next(arrivals, None)
            continue
        now, _, r = heapq.heappop(done)
        for f in workload.on_request_done(r, now):
            assert f.arrival_s >= now
            admit(f)
    return out


