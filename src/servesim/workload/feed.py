"""The workload's way into the event loop: requests scheduled as arrivals one at a time from
the workload's stream, plus the follow-ups a closed-loop workload makes when requests end."""

from __future__ import annotations

import heapq
from typing import Callable

from servesim.core.loop import PRIO_ARRIVAL, EventLoop
from servesim.errors import InputError
from servesim.workload.request import Request

#: Latest arrival time accepted, s (about 32 years). Later ones are a time in the wrong unit (or
#: a corrupt value such as 1e308); beyond it float seconds also lose sub-microsecond precision.
MAX_ARRIVAL_S = 1e9

Progress = Callable[[int, int | None, float], None]  # (requests done, expected total, simulated time)


class Feed:
    """Brings the workload's requests to the cluster: one stream arrival pending at a time (the
    trace is never all in memory), plus closed-loop follow-ups when requests end; knows when
    the next arrival is (replicas price their stretches up to it) and counts progress."""

    def __init__(self, workload, loop: EventLoop, progress: Progress | None) -> None:
        self.workload = workload
        self.loop = loop
        self.progress = progress
        self.deliver: Callable[[float, Request], None] = lambda t, req: None  # set to the cluster's entry
        self.num_done = 0
        self.closed_loop = getattr(workload, "closed_loop", True)
        self._noticed: set[int] = set()  # ids whose follow-ups came before they ended (`notice`)
        self._stream = workload.arrivals()
        self._times: list[float] = []  # arrivals scheduled and not yet arrived (a heap)

    def start(self) -> None:
        self._next_from_stream()

    def next_arrival_s(self) -> float:
        return self._times[0] if self._times else float("inf")

    def pending(self) -> bool:
        return bool(self._times)

    def on_done(self, req: Request, now_s: float) -> None:
        """A request reached a terminal state: count it, schedule its follow-ups (unless
        `notice` did when it finished)."""
        if self._noticed and req.id in self._noticed:
            self._noticed.remove(req.id)
            return
        self.num_done += 1
        if self.progress and self.num_done % 2000 == 0:
            self.progress(self.num_done, self.workload.expected_num_requests, now_s)
        if self.closed_loop:  # (an open-loop workload makes no follow-ups: no call per request)
            for follow in self.workload.on_request_done(req, now_s):
                self._schedule(follow, self._arrive)

    def notice(self, req: Request, now_s: float) -> None:
        """A request finished at `now_s` inside a fast-forwarded stretch, which processes it
        later (`replica/finish_notices.py`): its follow-ups come now, as they would have
        stepping (`on_done`, its id not yet noticed), and not again when it is done."""
        self.on_done(req, now_s)
        self._noticed.add(req.id)

    def _schedule(self, req: Request, handler) -> None:
        _check_arrival(req)
        heapq.heappush(self._times, req.arrival_s)
        self.loop.schedule(req.arrival_s, handler, req, PRIO_ARRIVAL)

    def _arrive(self, now_s: float, req: Request) -> None:
        heapq.heappop(self._times)
        self.deliver(now_s, req)

    def arrive_from_stream(self, now_s: float, req: Request) -> None:
        # `_next_from_stream` then `_arrive`, in one call (every request of a trace passes here):
        # the next stream arrival's time replaces this one's, the smallest, in the heap.
        nxt = next(self._stream, None)
        if nxt is None:
            heapq.heappop(self._times)
        else:
            t = nxt.arrival_s
            if t < now_s:
                _out_of_order(nxt, now_s)
            if not t <= MAX_ARRIVAL_S:
                _check_arrival(nxt)
            heapq.heapreplace(self._times, t)
            self.loop.schedule(t, self.arrive_from_stream, nxt, PRIO_ARRIVAL)
        self.deliver(now_s, req)

    def _next_from_stream(self) -> None:
        req = next(self._stream, None)
        if req is not None:
            if req.arrival_s < self.loop.now_s:
                _out_of_order(req, self.loop.now_s)
            self._schedule(req, self.arrive_from_stream)


def _out_of_order(req: Request, now_s: float) -> None:
    raise InputError(f"workload arrivals are not in time order: request {req.id} at {req.arrival_s} s after one "
                     f"at {now_s} s")


def _check_arrival(req: Request) -> None:
    if not req.arrival_s <= MAX_ARRIVAL_S:
        raise InputError(f"request {req.id} arrives at {req.arrival_s:g} s, beyond the limit of {MAX_ARRIVAL_S:g} s "
                         "(about 32 years); is a time given in the wrong unit (e.g. milliseconds as seconds)?")
