"""The event kernel: a heap of (time, priority, sequence) -> handler, in virtual time only.

Ties are broken first by an explicit priority (lower runs first), then by insertion order, so
a run is reproducible. Handlers schedule follow-ups through `schedule` (or `schedule_soon`, for
one at the current instant: held beside the heap, in the same order). Time never runs
backwards: scheduling an event in the past is a bug and raises.
"""

from __future__ import annotations

import heapq
from typing import Any, Callable

Handler = Callable[[float, Any], None]

# Priorities for events at the same instant: arrivals are seen before a replica schedules its
# next step (vLLM picks up requests that arrived during the previous step), and completions
# are processed before new work is scheduled.
PRIO_ARRIVAL = 0
PRIO_STEP_END = 1
PRIO_STEP_START = 2


class EventLoop:
    """Discrete-event loop. `now_s` is the time of the event being handled."""

    __slots__ = ("_heap", "_seq", "_soon", "now_s", "num_events")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, Handler, Any]] = []
        # One event at the current instant held out of the heap (`schedule_soon`): an event is
        # run from here or from the heap, whichever entry is smaller, so the order is the heap's.
        self._soon: tuple[float, int, int, Handler, Any] | None = None
        self._seq = 0
        self.now_s = 0.0
        self.num_events = 0

    def schedule(self, time_s: float, handler: Handler, payload: Any = None, priority: int = 0) -> None:
        """Run `handler(time_s, payload)` at `time_s` (>= now)."""
        if time_s < self.now_s:
            raise RuntimeError(f"event scheduled in the past: {time_s} < now {self.now_s}")
        self._seq += 1
        heapq.heappush(self._heap, (time_s, priority, self._seq, handler, payload))

    def schedule_soon(self, time_s: float, handler: Handler, payload: Any = None, priority: int = 0) -> None:
        """`schedule`, for an event at the current instant (an idle replica's start after an
        arrival: one in five events at many replicas), kept out of the heap when no other is:
        it takes its sequence number as `schedule` would and runs when it is the smallest
        pending entry, so the events and their order are `schedule`'s, without a push and pop."""
        if time_s != self.now_s or self._soon is not None:
            return self.schedule(time_s, handler, payload, priority)
        self._seq += 1
        self._soon = (time_s, priority, self._seq, handler, payload)

    def __len__(self) -> int:
        return len(self._heap) + (self._soon is not None)

    def _head(self) -> tuple | None:
        """The next pending entry (None: nothing pending)."""
        soon, heap = self._soon, self._heap
        if soon is None:
            return heap[0] if heap else None
        return heap[0] if heap and heap[0] < soon else soon

    def next_time_s(self) -> float:
        """Time of the next pending event (inf when there is none)."""
        if self._soon is not None:
            return self._soon[0]  # (the current instant: nothing pending is earlier)
        return self._heap[0][0] if self._heap else float("inf")

    def next_is(self, handler: Handler, by_s: float) -> bool:
        """Whether the next pending event is `handler`'s, at or before `by_s`."""
        head = self._head()
        return head is not None and head[0] <= by_s and head[3] == handler

    def run(self, until_s: float = float("inf")) -> None:
        """Handle events in order until none is pending or the next one is after `until_s`."""
        heap = self._heap
        pop = heapq.heappop
        while True:
            event = self._soon
            if event is not None and not (heap and heap[0] < event):
                if event[0] > until_s:
                    break
                self._soon = None
            elif heap and heap[0][0] <= until_s:
                event = pop(heap)
            else:
                break
            time_s, _, _, handler, payload = event
            if time_s < self.now_s:  # pragma: no cover - guarded by schedule()
                raise RuntimeError("time ran backwards")
            self.now_s = time_s
            self.num_events += 1
            handler(time_s, payload)
