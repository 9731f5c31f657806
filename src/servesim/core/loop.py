"""The event kernel: a heap of (time, priority, sequence) -> handler, in virtual time only.

Ties are broken first by an explicit priority (lower runs first), then by insertion order, so
a run is reproducible. Handlers schedule follow-ups through `schedule`. Time never runs
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

    __slots__ = ("_heap", "_seq", "now_s", "num_events")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, Handler, Any]] = []
        self._seq = 0
        self.now_s = 0.0
        self.num_events = 0

    def schedule(self, time_s: float, handler: Handler, payload: Any = None, priority: int = 0) -> None:
        """Run `handler(time_s, payload)` at `time_s` (>= now)."""
        if time_s < self.now_s:
            raise RuntimeError(f"event scheduled in the past: {time_s} < now {self.now_s}")
        self._seq += 1
        heapq.heappush(self._heap, (time_s, priority, self._seq, handler, payload))

    def __len__(self) -> int:
        return len(self._heap)

    def next_time_s(self) -> float:
        """Time of the next pending event (inf when there is none)."""
        return self._heap[0][0] if self._heap else float("inf")

    def next_is(self, handler: Handler, by_s: float) -> bool:
        """Whether the next pending event is `handler`'s, at or before `by_s`."""
        heap = self._heap
        return bool(heap) and heap[0][0] <= by_s and heap[0][3] == handler

    def run(self, until_s: float = float("inf")) -> None:
        """Handle events in order until the heap is empty or the next event is after `until_s`."""
        heap = self._heap
        pop = heapq.heappop
        while heap and heap[0][0] <= until_s:
            time_s, _, _, handler, payload = pop(heap)
            if time_s < self.now_s:  # pragma: no cover - guarded by schedule()
                raise RuntimeError("time ran backwards")
            self.now_s = time_s
            self.num_events += 1
            handler(time_s, payload)
