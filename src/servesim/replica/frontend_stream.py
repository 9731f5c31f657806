"""Admissions to an API server that also streams every token (`FrontendConfig.output_token_s > 0`).

The plain front end (frontend.py) prices a request's admission when it arrives: the process is
a FIFO of admissions only. When the same process also streams each step's tokens, the tokens
come first: a request waiting to be admitted starts only when the process has no token work
left (non-preemptive: tokens made during an admission wait for it to end). Saturated, the process
then lets in only as many users as it can stream tokens for, the others wait to be admitted,
and the client's TPOT stays the engine's step at that batch while the wait goes to the TTFT, the
split the TensorRT-LLM H100 1.0.0rc3 runs measure (docs/fidelity.md, "TensorRT-LLM H100
1.0.0rc3: a token-rate ceiling"). Token work enters the process at each step's end
(`FrontEnd.deliver_s`, called by the engine); this queue only decides when an admission starts.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from servesim.core.loop import PRIO_STEP_START, EventLoop
from servesim.replica.frontend import FrontEnd
from servesim.workload.request import Request


class StreamingAdmissions:
    """Requests waiting for an API server that streams tokens first, in arrival order."""

    def __init__(self, frontend: FrontEnd, loop: EventLoop, hand: Callable[[Request, float], None]) -> None:
        self.frontend = frontend
        self.loop = loop
        self.hand = hand  # (request, when the engine receives it): schedules the hand-off
        self._waiting: deque[tuple[Request, float]] = deque()  # (request, extra delay after admission)
        self._check_s: float | None = None  # when a check of the process is scheduled, if one is

    def submit(self, req: Request, now_s: float, delay_s: float) -> None:
        self._waiting.append((req, delay_s))
        self._next(now_s)

    def clear(self) -> None:
        """Forget the waiting requests (the replica crashed and takes them back)."""
        self._waiting.clear()

    def _check(self, now_s: float, _: object) -> None:
        self._check_s = None
        self._next(now_s)

    def _next(self, now_s: float) -> None:
        """Admit the head if the process is free now, else look again when it will be (token work
        that arrives meanwhile moves that later; step ends at the same instant go first)."""
        while self._waiting and self._check_s is None:
            free_s = self.frontend.free_s
            if free_s > now_s:
                self._check_s = free_s
                self.loop.schedule(free_s, self._check, None, PRIO_STEP_START)
                return
            req, delay_s = self._waiting.popleft()
            self.hand(req, self.frontend.engine_arrival_s(now_s, req.prompt_len) + delay_s)
