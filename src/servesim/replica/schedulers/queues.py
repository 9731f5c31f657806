"""Waiting queues: FCFS (a deque), priority (a heap on (priority, arrival)) and a list kept sorted
by a policy's key (`SortedWaiting`), one interface; and a running batch's order kept between steps
(`CountsAppends`, `ArrivalOrdered`)."""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right, insort
from collections import deque
from operator import attrgetter
from typing import Any, Callable, Iterator

from servesim.workload.request import Request


class FCFSQueue(deque):
    """First come, first served; preempted requests go back to the front (vLLM v1).

    The deque itself (`pop` takes the head): its length, truth and iteration, asked several
    times per arrival (`num_waiting`, the joins' checks), are C calls, not Python methods."""

    __slots__ = ()

    prepend = deque.appendleft
    pop = deque.popleft  # type: ignore[assignment]

    def peek(self) -> Request:
        return self[0]

    # (`append`, `remove`, `clear`, `len`, `iter`: the deque's)


class DensityQueue(FCFSQueue):
    """`FCFSQueue` for a policy that admits from anywhere in it (Andes, by density). Requests
    arrive in id order and most stay in it (a preempted one goes back to the front), so
    `remove` takes the head at once and looks any other up by bisection on the ids, with
    `deque.remove`'s scan from the front where that finds another request or the queue is
    short (its scan cheaper than the bisection's key calls). That scan compared about 550
    requests of 830 per admission in an overloaded Andes queue (5.5 % of its azure-conv-10x
    cell at 1 replica)."""

    __slots__ = ()

    def remove(self, req: Request) -> None:
        if self[0] is req:
            deque.popleft(self)
            return
        if len(self) > 32:
            i = bisect_left(self, req.id, key=REQUEST_ID)
            if i < len(self) and self[i] is req:
                del self[i]
                return
        deque.remove(self, req)


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


class SortedWaiting(FCFSQueue):
    """Waiting queue re-sorted by the scheduler's (possibly time-varying) key before each use;
    a preempted request re-enters by its key, not at the front.

    With `key` (the stored keys of a scheduler that tells the queue when a waiting request's
    key changes, by clearing `clean`), the queue stays sorted between uses: a request joins
    at its place (after equal keys, as a stable sort puts a request appended last) and a
    clean queue is not sorted again. Without it every `sort` sorts.
    """

    __slots__ = ("key", "clean")

    def __init__(self, key=None) -> None:
        super().__init__()
        self.key = key
        self.clean = False  # sorted by `key`, and no key changed since

    def append(self, req: Request) -> None:
        if self.clean and self:
            key = self.key
            k = key(req)
            if k < key(self[-1]):
                self.insert(bisect_right(self, k, key=key), req)
                return
        deque.append(self, req)

    def prepend(self, req: Request) -> None:
        self.append(req)

    def rekeyed(self, old: dict[Request, Any], keys: dict[Request, Any]) -> None:
        """The stored keys of the requests `old` maps (queued here) changed from the keys it
        maps them to (`keys`: the stored keys, which `key` reads): a clean queue takes each
        out (`take_out`) and back in at its new place (with unique keys that is the sorted
        order), unless there are many (then it is sorted at its next use)."""
        if not (self.clean and old):
            return
        if len(old) > 16:
            self.clean = False
            return
        key = self.key
        found = take_out(self, old, keys)
        if len(found) < len(old):  # (keys that are not unique: the first of equals was another)
            for req in old.keys() - set(found):
                self.remove(req)
        for req in old:
            self.insert(bisect_right(self, key(req), key=key), req)

    def sort(self, key) -> None:
        """Sort by `key` (the same order as `self.key`'s when that is set)."""
        if not self.clean:
            ordered = sorted(self, key=key)
            self.clear()
            self.extend(ordered)
            self.clean = self.key is not None


def kept_order(running: list[Request], appended: int, key: Callable[[Request], Any]) -> list[Request]:
    """`sorted(running, key=key)` for a batch whose requests but the last `appended` are in
    that order (removals keep it): only those are placed, by bisection, instead of a key and
    a sort of the whole batch at every step (about 5 us beside 90 decodes). (If fewer than
    counted are left, the last ones counted are earlier ones: placing them is right.) Many
    appended: one sort."""
    if appended * 8 > len(running):
        return sorted(running, key=key)
    order = running[:len(running) - appended]
    for req in running[len(running) - appended:]:
        insort(order, req, key=key)
    return order


def take_out(items, old: dict, keys: dict) -> list:
    """Take out of `items` (a list or deque in order by `keys`, but for the items of `old`,
    in order by the keys `old` maps them to: their keys before they moved) each item of `old`
    found at its old key's place by bisection; returns those taken, in `old`'s order (the
    others are not in `items`, or sit among equal keys). The old keys are put back in `keys`
    meanwhile, so each bisection reads them in C. Why not `remove`: it compares from the
    front, and an overloaded autellix queue held about 2,300 calls, a moved one about 1,000
    in (4 % of its azure-conv-10x cell at 1 replica)."""
    new = {x: keys[x] for x in old}
    keys.update(old)
    get = keys.__getitem__
    taken = []
    for x, k in old.items():
        i = bisect_left(items, k, key=get)
        if i < len(items) and items[i] is x:
            del items[i]
            taken.append(x)
    keys.update(new)
    return taken


ARRIVAL_ID = attrgetter("arrival_s", "id")  # (arrival order, ties by id: the same tuples as a lambda, built in C)
REQUEST_ID = attrgetter("id")


class CountsAppends:
    """A policy that counts the requests appended to `running` since it last put it in order (a
    mixin before the `Scheduler` class; `_appended`): an admission (`start`), a hand-over
    (`add_transferred`), a swap-in (`resume`, of the policies that swap); a policy appending by
    another path counts there too. Removals keep an order, so only those counted need placing
    (`kept_order`)."""

    _appended = 0

    def resume(self, req: Request, out, num_tokens: int, keep_cpu_copy: bool = False) -> int:
        self._appended += 1
        return super().resume(req, out, num_tokens, keep_cpu_copy)

    def start(self, req: Request, num_cached: int, num_tokens: int, out) -> None:
        super().start(req, num_cached, num_tokens, out)
        self._appended += 1

    def add_transferred(self, req: Request, now_s: float) -> None:
        super().add_transferred(req, now_s)
        self._appended += 1


class ArrivalOrdered(CountsAppends):
    """A policy whose running pass walks its batch in arrival order and leaves `running` in it,
    so `_arrival_order` places only the requests appended since (`CountsAppends`)."""

    def _arrival_order(self) -> list[Request]:
        """`sorted(self.running, key=ARRIVAL_ID)`, placing only the requests appended since."""
        order = kept_order(self.running, self._appended, ARRIVAL_ID)
        self._appended = 0
        return order
