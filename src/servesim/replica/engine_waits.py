"""The engine's waits: KV swap copies priced per step, and wake-ups at policy timers.

`Engine` (`replica/engine.py`) runs the step loop; this mixin owns what makes a step wait or
an idle engine wake up other than compute: the copies of the swaps a scheduler decided
(synchronous ones lengthen the step, overlapped ones occupy a PCIe stream per direction and
report when a swapped-in request may run), the wake-up at the next policy timer (going idle
until then), and the timers a stretch ran through, fired among its finishes. Separate
because none of it runs on a busy step without swaps or timers, and it keeps its own accounting
(`swap_*`, `_link_free_s`, `_wake_s`, set by `Engine._count_from_zero`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from servesim.core.loop import PRIO_STEP_START
from servesim.replica.swap import num_copies, num_layers, swap_time_s

if TYPE_CHECKING:
    from servesim.replica.schedulers.base import SchedulerOutput
    from servesim.workload.request import Request


class StepWaits:
    """`Engine`'s swap pricing and timer wake-ups."""

    __slots__ = ()  # (`Engine` holds the state in its slots)

    # ------------------------------------------------------------------ swaps and timers
    def _swap(self, out: SchedulerOutput, now_s: float) -> float:
        """Price this step's swaps; returns the time the step waits for synchronous copies."""
        mech = self.scheduler.swap_mechanics
        bs = self.kv.block_size
        layers = num_layers(self.perf)
        wait_s = 0.0
        sides = ((0, out.swapped_out, out.swap_out_blocks), (1, out.swapped_in, out.swap_in_blocks))
        for direction, reqs, blocks in sides:
            for i, req in enumerate(reqs):
                nb = blocks[i] if i < len(blocks) else self.kv.num_blocks_of(req.id)
                t = swap_time_s(nb, bs, self.perf, mech)
                if nb:
                    self.num_swap_copies += num_copies(nb, layers, mech.blocks_per_copy)
                self.num_swapped_blocks += nb
                self.swap_transfer_s += t
                if mech.overlap:
                    end = max(now_s, self._link_free_s[direction]) + t
                    self._link_free_s[direction] = end
                    if direction:
                        self.scheduler.swap_done(req, end)
                else:
                    wait_s += t
        self.swap_stall_s += wait_s
        return wait_s

    def _wake_at(self, t: float) -> None:
        """Call `schedule` again at `t` unless a step has started by then (policy timers)."""
        if self._wake_s <= t and self._wake_s > self.loop.now_s:
            return  # an earlier wake-up is pending
        self._wake_s = t
        self.loop.schedule(t, self._on_wake, self._epoch, PRIO_STEP_START)

    def _on_wake(self, now_s: float, epoch: int) -> None:
        if epoch != self._epoch:
            return
        if self.on_event:
            self.on_event()
        self._wake_s = float("inf")
        if not self.busy:
            self.busy = True
            self._start_step(now_s)

    def _finish_timed(self, finished: list[Request], timers: list[tuple[float, object]], now_s: float) -> None:
        """`finish_all` of a stretch's finishes with the policy's timers it ran through, (step
        start, key) in step order, fired among them as stepping did: a finish at the end of a
        step before the `schedule` of the next (at that time), a timer in the `schedule` of the
        first step starting at or after its time."""
        sched = self.scheduler
        i, n = 0, len(finished)
        for start_s, key in timers:
            j = i
            while j < n and finished[j].finish_s <= start_s:
                j += 1
            if j > i:
                sched.finish_all(finished[i:j], now_s)
                i = j
            sched.fire_timers((key,))
        sched.finish_all(finished[i:], now_s)

    def _go_idle(self, now_s: float) -> None:
        """`_start_step` for a scheduler that has nothing (`Scheduler.idle`), without its `schedule`."""
        if self.on_change:
            self.on_change(now_s)
        self.busy = False
        wake_s = self.scheduler.next_timer_s()
        if now_s < wake_s < float("inf"):
            self._wake_at(wake_s)
