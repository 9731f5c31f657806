"""Waiting queues: FCFS (a deque) and priority (a heap on (priority, arrival)), one interface."""

from __future__ import annotations

import heapq
from collections import deque
from typing import Iterator

from servesim.workload.request import Request


class FCFSQueue:
    """First come, first served; preempted requests go back to the front (vLLM v1)."""

    __slots__ = ("_q",)

    def __init__(self) -> None:
        self._q: deque[Request] = deque()

    def append(self, req: Request) -> None:
        self._q.append(req)

    def prepend(self, req: Request) -> None:
        self._q.appendleft(req)

    def peek(self) -> Request:
        return self._q[0]

    def pop(self) -> Request:
        return self._q.popleft()

    def remove(self, req: Request) -> None:
        self._q.remove(req)

    def clear(self) -> None:
        self._q.clear()

    def __len__(self) -> int:
        return len(self._q)

    def __iter__(self) -> Iterator[Request]:
        return iter(self._q)


class PriorityQueue:
    """Heap ordered by (priority, arrival time); lower priority value is served first.

    As in vLLM v1, `prepend` is a plain insert: a preempted request re-enters by its key.
    """

    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[int, float, int, Request]] = []
        self._seq = 0

    def append(self, req: Request) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (req.priority, req.arrival_s, self._seq, req))

    prepend = append

    def peek(self) -> Request:
        return self._heap[0][3]

    def pop(self) -> Request:
        return heapq.heappop(self._heap)[3]

    def remove(self, req: Request) -> None:
        if self._heap[0][3] is req:  # the head (an admission): no rebuild
            heapq.heappop(self._heap)
            return
        self._heap = [e for e in self._heap if e[3] is not req]
        heapq.heapify(self._heap)

    def clear(self) -> None:
        self._heap.clear()

    def __len__(self) -> int:
        return len(self._heap)

    def __iter__(self) -> Iterator[Request]:
        return (e[3] for e in sorted(self._heap))


def make_queue(policy: str) -> FCFSQueue | PriorityQueue:
    return PriorityQueue() if policy == "priority" else FCFSQueue()
