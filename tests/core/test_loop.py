"""The event kernel: an event held out of the heap (`schedule_soon`) runs in the heap's order."""

from __future__ import annotations

import random

from servesim.core.loop import EventLoop


def _play(soon: bool, seed: int) -> tuple[list, int]:
    """Random events whose handlers schedule follow-ups, some at the current instant with
    random priorities (by `schedule_soon` when `soon`, else by `schedule`): the order in which
    they ran, with what the loop answered inside each handler, and the follow-ups at the
    instant that went to the heap."""
    rng = random.Random(seed)
    loop = _Counting()
    seen: list = []

    def handler(now_s: float, payload) -> None:
        name, _ = payload
        seen.append((now_s, name, loop.next_time_s(), len(loop), loop.next_is(handler, now_s)))
        if len(seen) > 400:
            return
        # follow-ups at this instant: often one after the rest (an idle replica's start), at times two
        for j, prio in enumerate([2] * (rng.random() < 0.6) + [rng.randrange(3)] * (rng.random() < 0.2)):
            follow = (f"{name}.{j}", "now")
            if soon:
                loop.schedule_soon(now_s, handler, follow, prio)
            else:
                loop.schedule(now_s, handler, follow, prio)
        if rng.random() < 0.7:  # and later (a step's end, the next arrival), sometimes at a tie
            loop.schedule(now_s + (rng.random() if rng.random() < 0.9 else 0.0), handler, (f"{name}+", "later"), rng.randrange(3))

    for i in range(20):
        loop.schedule(rng.randrange(12) * 0.5, handler, (f"e{i}", "start"), rng.randrange(3))
    loop.run()
    return seen, loop.pushed


class _Counting(EventLoop):
    """Counts the follow-ups at the current instant that enter the heap (`schedule_soon` falls
    back to `schedule` when the held slot is taken)."""

    __slots__ = ("pushed",)

    def __init__(self) -> None:
        super().__init__()
        self.pushed = 0

    def schedule(self, time_s, handler, payload=None, priority=0) -> None:
        self.pushed += time_s == self.now_s and payload[1] == "now"
        super().schedule(time_s, handler, payload, priority)


def test_events_held_out_of_the_heap_run_in_the_heaps_order():
    for seed in range(20):
        soon, pushed_soon = _play(True, seed)
        heap, pushed_heap = _play(False, seed)
        assert soon == heap  # the same events, times and answers, in the same order
        assert pushed_heap > 20
        assert pushed_soon < 0.7 * pushed_heap  # most follow-ups at the instant never entered the heap


def test_an_event_held_out_of_the_heap_waits_for_an_earlier_one_at_its_instant():
    loop = EventLoop()
    order = []
    loop.schedule(0.0, lambda t, p: (order.append(p), loop.schedule_soon(t, lambda t2, q: order.append(q), "start", 2),
                                     loop.schedule(t, lambda t2, q: order.append(q), "arrival", 0)), "first", 0)
    loop.run()
    assert order == ["first", "arrival", "start"]
    loop.schedule_soon(loop.now_s, lambda t, p: order.append(p), "late")  # outside `run`: held until the next run
    assert len(loop) == 1 and loop.next_time_s() == 0.0
    loop.run(until_s=-1.0)
    assert order[-1] == "start"
    loop.run()
    assert order[-1] == "late" and len(loop) == 0
