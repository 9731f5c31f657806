"""TensorRT-LLM's overlap scheduler fetches new requests one step ahead of the step they can join.

The PyTorch executor's overlapping loop (`PyExecutor._executor_loop_overlap`,
`tensorrt_llm/_torch/pyexecutor/py_executor.py`, 1.0) runs each iteration in this order: fetch
new requests (`_fetch_new_requests`), schedule, launch the step (`_forward_step`, asynchronous),
then wait for the *previous* step (`_update_requests`) and send its tokens
(`_process_previous_batch`). So the fetch that fills step n+1 runs as soon as step n-1's tokens
are out, that is as step n starts: a request that reaches the engine while step n runs is
fetched when step n+1 starts and first runs in step n+2. Its first token waits for the step in
flight and for the next one, which the CPU had already scheduled (often another user's prompt
at a few users), while the other users' decodes see each prompt once. A loop with nothing to
run fetches again at once, so an idle engine takes a new request at its next step. The
synchronous loop (`_executor_loop`, `disable_overlap_scheduler: true`) fetches after each step's
tokens: no lag.

Played (`TRTLLMParams.overlap_fetch_lag`): a request added while a step runs stays out of
`schedule` until a step that started after it was added has ended; if nothing else can run, it
is fetched at once. It needs every step boundary, so the engine steps one by one
(`steps_one_by_one`). The not-yet-fetched requests stay in `waiting` (every count and the end
of the run see them), always its tail: arrivals append, paused requests go to the front.
"""

from __future__ import annotations

from itertools import islice

from servesim.replica.schedulers.outputs import SchedulerOutput
from servesim.workload.request import Request


class OverlapFetch:
    """The fetch lag of TensorRT-LLM's overlap scheduler, for `TRTLLMScheduler`."""

    def _init_fetch(self, lag: bool) -> None:
        self.fetch_lag = lag
        # (the engine then calls `schedule` at every step boundary: simulation.py)
        self.steps_one_by_one = lag
        # Requests added while a step ran and not fetched yet, by id, with the time each was added
        # (insertion order: the tail of `waiting`)
        self._unfetched: dict[int, float] = {}
        # Start of the step in flight (the last `schedule` that ran something); None: idle
        self._in_flight_s: float | None = None

    def _note_added(self, req: Request, now_s: float) -> None:
        if self.fetch_lag and self._in_flight_s is not None:
            self._unfetched[req.id] = now_s

    def _forget_unfetched(self, req: Request) -> None:
        self._unfetched.pop(req.id, None)

    def _visible_waiting(self):
        """The waiting requests `schedule` may look at: all but the unfetched tail."""
        n = len(self._unfetched)
        return self.waiting if not n else islice(self.waiting, len(self.waiting) - n)

    def _fetch_and_schedule(self, now_s: float, schedule) -> SchedulerOutput:
        """`schedule(now_s)` over the requests fetched by now: those added before the step that
        just ended started (or all, with no step in flight); then, if that runs nothing, all."""
        unfetched = self._unfetched
        if unfetched:
            start = self._in_flight_s
            if start is None:
                unfetched.clear()
            else:
                for rid in [rid for rid, t in unfetched.items() if t <= start]:
                    del unfetched[rid]
        out = schedule(now_s)
        if unfetched and not out.scheduled and not out.preempted:
            unfetched.clear()  # the loop has nothing to launch: it fetches again at once
            out = schedule(now_s)
        self._in_flight_s = now_s if out.scheduled else None
        return out
