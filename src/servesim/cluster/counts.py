"""The routers' in-flight counts, kept between arrivals instead of read from every replica.

A count-reading router (least-requests) reads every candidate's `outstanding_at(t)` at every
arrival. That count changes only when something happens on the replica (an event of its
engine, a submission, a crash) or when a finish inside its stretch in flight, processed late,
passes its step's end. So each replica's count is kept with the time up to which it holds
(`Replica.outstanding_until`), and read again only for the replicas touched since (their
engines call `touch` at each event: `Engine.on_event`) and those whose time has passed. The
numbers are the ones every replica would have answered (tests/cluster/test_route_reads.py).
Used only where every change to a replica passes through those events and the cluster's own
submissions and status changes (no autoscaler, power manager, migration, prefill/decode pools
or KV store: `simulation.py`).
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

from servesim.replica.replica import Replica


class InFlightCounts:
    """Each replica's in-flight count as of the last read, and up to when it holds."""

    __slots__ = ("replicas", "counts", "until", "touched", "_next")

    def __init__(self, replicas: list[Replica]) -> None:
        n = len(replicas)
        self.replicas = replicas
        self.counts = [0] * n
        self.until = [float("-inf")] * n  # count i holds for reads at t <= until[i]
        self.touched = set(range(n))  # replicas changed since their count was read
        self._next = float("-inf")  # <= min(until): no count is out of date before it
        for i, r in enumerate(replicas):
            r.engine.on_event = partial(self.touched.add, i)  # (a C call per event)

    def touch_all(self) -> None:
        """Something changed on replicas at large (a status change, a crash)."""
        self.touched.update(range(len(self.replicas)))

    def at(self, t: float, indices: Sequence[int]) -> list[int]:
        """`replicas[i].outstanding_at(t)` for each of `indices` (t: no earlier than the last read).
        The touched replicas' counts are read again at t (and, if some kept count may be out of
        date, those whose time has passed too), in one pass here: this runs at every arrival."""
        counts, until, touched = self.counts, self.until, self.touched
        stale = t > self._next
        if stale:
            touched.update([i for i, u in enumerate(until) if u < t])
        if touched:
            replicas = self.replicas
            first = self._next
            for i in touched:
                counts[i], u = replicas[i].outstanding_until(t)
                until[i] = u
                if u < first:
                    first = u
            touched.clear()
            self._next = first
        if stale:  # (the kept times are all current now: the earliest of them)
            self._next = min(until)
        if len(indices) == len(counts):  # (the candidates are every replica, in order)
            return counts.copy()
        return [counts[i] for i in indices]
