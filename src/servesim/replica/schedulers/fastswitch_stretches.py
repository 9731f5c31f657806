"""FastSwitch's fast-forward answers (`fastswitch.py`): the decode steps that repeat with
nothing pending or behind a head blocked until a finish, a prompt's chunk steps, arrivals kept
behind that head or joining a stretch in arrival order, admissions at finishes, and the order of
repeated speculative steps. They hold while the walk is in arrival order (one tenant held) and
its counting may be deferred (`FastSwitchFairness`).
"""

from __future__ import annotations

from math import inf
from operator import is_, itemgetter

from servesim.replica.schedulers.arrival_joins import admit_whole, whole_prompts
from servesim.replica.schedulers.base import (
    NO_FAST_FORWARD, REPEAT_THROUGH, UNLIMITED_STEPS, FastForward, SchedulerOutput,
)
from servesim.replica.schedulers.finish_admits import admits_of
from servesim.workload.request import Request, RequestState

_FIRST = itemgetter(0)


class FastSwitchStretches:
    """The fast-forward methods of `FastSwitchScheduler` (which holds the state they use)."""

    def fast_forward(self, output: SchedulerOutput) -> FastForward:
        # With nothing waiting or swapped, priority refreshes change nothing: the same
        # requests decode until one finishes or arrives (prompts done this step with them).
        # Through finishes too: a finish counts the request's tokens up to its last and
        # changes nothing else before the next step (lifts are decided there).
        if self.nothing_pending(output) and not self.swap_ready_s:
            self._count_all()  # (a stretch may cross a refresh: its snapshot needs the counts at its start)
            return REPEAT_THROUGH
        # Behind a head that waits until a finish, with one tenant held (the walk in arrival
        # order) and its counting deferred (no per-step pass to skip): the same batch repeats,
        # up to the step before the next priority refresh (no snapshot inside); finishes
        # admit inside the stretch (`finish_admits`).
        if (self.finish_admission() and not (output.preempted or output.swapped_out or output.swapped_in)
                and len(output.scheduled) == len(self.running)):
            interval, step = self.params.priority_update_interval, self.num_engine_steps
            return FastForward(repeat=True, after_prefill=True, max_steps=(step // interval + 1) * interval - step)
        return NO_FAST_FORWARD

    def repeats_chunk(self, output: SchedulerOutput) -> bool:
        # vLLM's chunk step (`repeats_running_chunk`) in this walk: one tenant held (arrival
        # order, no lift: its running requests hold it), the running requests first in that
        # order (every waiting one arrived after them: none is reached while budget is left),
        # nothing swapped or in flight, and counting deferrable (integral prices: counted
        # later, or at the stretch's end if not deferred now, its steps give the same integer
        # floats). A stretch that may cross a refresh step is counted up to now first, as a
        # decode stretch: `on_step_end` rebuilds the snapshot from the counts at its start (the
        # prompt's chunks before that step included), which a finish counted while deferring
        # would have moved. Another tenant's arrival cuts it (`chunk_keeps_arrival`).
        if not (self._may_defer() and not (self.swapped or self.swap_ready_s)
                and self.walks()
                and self.repeats_running_chunk(output, len(output.scheduled) - 1)
                and all(map(is_, map(_FIRST, output.scheduled), self._by_arrival))):
            return False
        prompt, chunk = output.scheduled[-1]
        step, interval = self.num_engine_steps, self.params.priority_update_interval
        if (step // interval + 1) * interval - step < -(-(prompt.num_tokens - prompt.num_computed_tokens) // chunk) - 1:
            self._count_all()  # (its steps, at most the prompt's chunks but its last, may reach the next refresh)
        self._chunk_prompt = prompt
        return True

    def chunk_keeps_arrival(self, req: Request | None) -> bool:
        # (another tenant's request is counted for and lifted at once: `add_request`, `_lift`;
        # and the walk is in arrival order: one that arrived before a running request, re-routed
        # after a crash, is walked before it and takes budget from the chunk)
        return (req is not None and req.tenant in self._held
                and all((req.arrival_s, req.id) > (r.arrival_s, r.id) for r in self.running))

    def arrival_keeps_batch(self, req: Request | None) -> bool:
        # A newcomer of the one tenant held (no lift, its count deferred) comes after the
        # blocked head in the arrival-order walk: never looked at before a finish (the next
        # arrival, None, is guessed to be of that tenant).
        if not self.finish_admission() or (req is not None and req.tenant not in self._held):
            return False
        head = self._blocked_head
        return self.waiting.peek() is head and (req is None or (req.arrival_s, req.id) > (head.arrival_s, head.id))

    def finish_admission(self) -> bool:
        # (a head blocked until a finish, one tenant, counting deferred, no swap in flight or held)
        return (self._blocked_head is not None and self._deferred and len(self._held) == 1 and not self.swapped
                and not self.swap_ready_s and self.walks())

    def finish_admits(self, num_running: int, free_blocks: int) -> list[tuple[Request, int]] | None:
        # the walk's admission, in arrival order (the queue's, for fresh requests) after every
        # running request decoded: no victim later than the head (all running arrived before it)
        if not (self.finish_admission() and self.waiting.peek() is self._blocked_head):
            return None
        # The last admitted may take a first chunk of its prompt, the budget left: every running
        # request arrived before the waiting ones, so the next walk gives that prompt (the latest
        # running) its rest from the budget the decodes leave before reaching them, as vLLM's
        # running pass does (`finish_admits.py`)
        found = admits_of(self, num_running, free_blocks, lambda req, budget: self.first_chunk(req, 0, budget),
                          chunk=True)
        return None if found is None else found[0]

    def admit_at_finish(self, joins: list[tuple[Request, int]], out: SchedulerOutput) -> None:
        admit_whole(self, joins, out)
        self._blocked_head = self.waiting.peek() if self.waiting else None

    def arrivals_join(self, num_running: int) -> list[tuple[Request, int]] | None:
        # With one tenant held (its counter the newcomers', so no lift moves it) and nothing
        # swapped, the walk is in arrival order: the running requests decode, then the
        # newcomers, last in that order, are admitted as vLLM admits. Integral prices: the
        # stretch counts their tokens at its end, in any grouping the same integer floats.
        held, waiting = self._by_arrival, self.waiting
        n = len(waiting)
        if (len(self._held) != 1 or self.swapped or self.swap_ready_s or self._unscheduled or not self._defer_prices
                or not self.walks() or not n):
            return None
        newcomers = held[-n:]
        if newcomers[0].tenant not in self.counters or any(r.state is not RequestState.WAITING for r in newcomers):
            return None  # (a tenant never counted: stepping's lift would add its zero counter)
        max_num_seqs, max_num_batched_tokens, _, _ = self.limits
        return whole_prompts(newcomers, len(self.running), num_running, max_num_seqs, max_num_batched_tokens,
                             lambda req, budget: self.first_chunk(req, 0, budget))

    def join(self, joins: list[tuple[Request, int]], out: SchedulerOutput) -> None:
        self.before_join()
        admit_whole(self, joins, out)

    def before_join(self) -> None:
        """What `schedule` does before its walk, done by a join admitting in its place (`join`;
        `replica/keyed_join.py`, which admits a next turn with the hits it found); a refresh's
        snapshot is the stretch end's (`on_step_end`)."""
        if self._arrived:
            self._lift()
        self._blocked_head = None

    def joins_last(self, req: Request, now_s: float) -> bool:
        """Would waiting `req` (a next turn, the only request waiting), admitted into the stretch
        in flight by vLLM's calls, be what the next `schedule` does, and run after every running
        request in the later steps (`replica/keyed_join.py`)? With one tenant held, already
        counted (no lift moves it), nothing swapped, in flight or transferred, and integral
        prices (`arrivals_join`'s conditions): the walk is in arrival order, the running requests
        decode first and the turn, the latest arrival, is admitted last by `admit` (no room to
        make: the engine checks its blocks), and it stays last in that order."""
        return (len(self._held) == 1 and not (self.swapped or self.swap_ready_s or self._unscheduled)
                and self._defer_prices and req.tenant in self.counters)

    # ---- the order of repeated steps (speculative decoding) ------------------------
    def repeat_order(self, output: SchedulerOutput) -> list[Request] | None:
        # With nothing waiting or swapped (the only case `fast_forward` repeats), each step
        # walks the running requests by (snapshot counter, arrival): fixed until the next
        # priority refresh (`repeat_order_limit`). A tenant not in the snapshot is keyed by its
        # live counter, which every step changes (unless it is the only tenant held: then the
        # walk is in arrival order).
        snapshot = self._snapshot
        if len(self._held) > 1 and any(t not in snapshot for t in self._held):
            return None
        return sorted((r for r, _ in output.scheduled), key=self._key)

    def repeat_order_limit(self, output: SchedulerOutput) -> tuple[float, int]:
        # Up to the step before the next refresh: that step may re-sort by new counters. With
        # one tenant held every key has its counter, so the walk stays in arrival order across
        # refreshes (a stretch's end rebuilds the snapshot from the token log: `on_step_end`).
        if len(self._held) == 1:
            return inf, UNLIMITED_STEPS
        interval, step = self.params.priority_update_interval, self.num_engine_steps
        return inf, (step // interval + 1) * interval - step
