"""The real-time driver: one virtual-time replica advanced on the wall clock.

The driver owns an event loop, engine, scheduler and KV cache built as `simulate()` builds
them (fast-forward off, so every token has its own step-end event). It runs the loop up to
the current time (wall seconds since start / time_scale), then sleeps until the next event,
or until a new request wakes it. Each HTTP request becomes a `Request` arriving at the time it
was received; at every step end the driver sees which requests emitted tokens and wakes
their streams. Its coupling to the engine is narrow: add a request, remove one, run the loop
to a time, and a step-end callback through the recorder interface.

Aborts (a client went away) are applied as vLLM applies them: between engine steps. A request
in the step being run is removed when the next step is scheduled (its tokens from that step
are dropped); otherwise at once.
"""

from __future__ import annotations

import dataclasses

import asyncio
import time
from typing import Callable, Protocol

import numpy as np

from servesim.core.loop import PRIO_ARRIVAL, EventLoop
from servesim.replica.engine import Engine
from servesim.scenario import Scenario
from servesim.cluster.build import resolve_pools
from servesim.workload.request import Request, RequestState


class Observer(Protocol):
    """What the metrics layer hears from the driver (times in simulated seconds)."""

    def on_token(self, req: Request, num_new: int, time_s: float, prev_s: float | None) -> None: ...
    def on_done(self, req: Request, time_s: float) -> None: ...
    def on_preemption(self, req: Request) -> None: ...


class Stream:
    """One served request as the HTTP layer sees it: tokens released so far, done or not."""

    __slots__ = ("req", "num_ready", "last_token_s", "num_preemptions", "done", "aborted", "event")

    def __init__(self, req: Request) -> None:
        self.req = req
        self.num_ready = 0  # tokens the simulation has emitted (the client may not have them yet)
        self.last_token_s: float | None = None
        self.num_preemptions = 0
        self.done = False
        self.aborted = False
        self.event = asyncio.Event()  # set when tokens arrive or the request ends


class LiveRecorder:
    """Stands in for the run recorder: a server runs indefinitely, so nothing is kept; each
    step end is passed on to the driver."""

    def __init__(self, on_step_end: Callable[[float], None]) -> None:
        self.num_steps = 0
        self.on_step_end = on_step_end

    def add_request(self, req: Request) -> None:
        pass

    def log_step(self, start_s: float, end_s: float, *_counts) -> None:
        self.num_steps += 1
        self.on_step_end(end_s)


class Driver:
    """A replica served on a real-time clock (`clock` returns monotonic wall seconds)."""

    def __init__(self, scenario: Scenario, time_scale: float = 1.0, observer: Observer | None = None,
                 on_arrival: Callable[[Request], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        pool = resolve_pools(scenario)[0]  # one replica, built as `simulate` builds it, stepping one by one
        pool = dataclasses.replace(pool, config=pool.config.model_copy(update={"fast_forward": False}))
        self.perf, self.config, self.num_gpu_blocks = pool.perf, pool.config, pool.num_gpu_blocks
        self.scheduler, self.kv = pool.make_parts()
        self.loop = EventLoop()
        policy_seed = np.random.SeedSequence(scenario.seed).spawn(2)[1]  # as simulate() seeds the engine
        self.engine = Engine(self.config, self.scheduler, self.kv, self.perf, self.loop,
                             LiveRecorder(self._on_step_end), self._on_done, rng=np.random.default_rng(policy_seed))
        self.time_scale = time_scale
        self.observer = observer
        self.on_arrival = on_arrival
        self.clock = clock
        self.start_clock()
        self.streams: dict[int, Stream] = {}  # requests in flight, by id
        self.num_requests = 0
        self.num_aborted = 0
        self._pending_aborts: list[Request] = []
        self._wakeup: asyncio.Future | None = None
        self.error: Exception | None = None  # why the simulation stopped, if it did
        schedule = self.scheduler.schedule

        def schedule_after_aborts(now_s: float):  # aborts take effect between steps, as in vLLM
            if self._pending_aborts:
                for req in self._pending_aborts:
                    self._remove(req, now_s)
                self._pending_aborts.clear()
            return schedule(now_s)

        self.scheduler.schedule = schedule_after_aborts

    # ---------------------------------------------------------------- time
    def start_clock(self) -> None:
        """Simulated time 0 is now. `origin_unix_s` is that moment as Unix time, so a client can
        place the simulation's times (the served trace's arrivals, first tokens) on its own clock."""
        self.t0, self.origin_unix_s = self.clock(), time.time()

    def now_s(self) -> float:
        """Simulated time now (never behind the event loop)."""
        return max((self.clock() - self.t0) / self.time_scale, self.loop.now_s)

    def wall_of(self, sim_s: float) -> float:
        return self.t0 + sim_s * self.time_scale

    def advance(self, until_s: float | None = None) -> None:
        """Handle every event up to `until_s` (default: now). If the simulation fails (a
        simulator bug), every open stream ends and `error` keeps the cause; later calls raise it."""
        if self.error is not None:
            raise RuntimeError(f"the simulated engine stopped: {self.error}")
        try:
            self.loop.run(until_s=self.now_s() if until_s is None else until_s)
        except Exception as e:
            self.error = e
            for stream in self.streams.values():
                stream.done = True
                stream.event.set()
            self.streams.clear()
            raise

    async def run(self) -> None:
        """Advance forever: handle what is due, then sleep until the next event or a wake-up."""
        aloop = asyncio.get_running_loop()
        while self.error is None:
            try:
                self.advance()
            except Exception:
                return  # `error` is set: requests get 500s, /health reports it
            self._wakeup = fut = aloop.create_future()
            next_s = self.loop.next_time_s()
            handle = None
            if next_s < float("inf"):
                delay_s = self.wall_of(next_s) - self.clock()
                handle = aloop.call_later(max(delay_s, 0.0), _resolve, fut)
            try:
                await fut
            finally:
                if handle is not None:
                    handle.cancel()

    def wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    # ---------------------------------------------------------------- requests
    def submit(self, prompt_len: int, output_len: int, hash_ids: tuple[int, ...] = (),
               max_tokens: int | None = None, priority: int = 0, tags: dict | None = None) -> Stream:
        """A request arriving now; returns its stream (done at once if the engine rejected it)."""
        self.advance()
        now_s = self.now_s()
        req = Request(id=self.num_requests, arrival_s=now_s, prompt_len=prompt_len, output_len=output_len,
                      hash_ids=hash_ids, hash_block_tokens=self.config.block_size, max_tokens=max_tokens,
                      priority=priority, extra=tags or {})
        self.num_requests += 1
        stream = self.streams[req.id] = Stream(req)
        if self.on_arrival:
            self.on_arrival(req)
        self.loop.schedule(now_s, lambda t, r: self.engine.add_request(r, t), req, PRIO_ARRIVAL)
        self.advance(now_s)  # admit it now: a rejection is known before the response starts
        self.wake()
        return stream

    def abort(self, stream: Stream) -> None:
        """The client went away: stop the request and free its KV (counted as aborted)."""
        if stream.done:
            return
        self.streams.pop(stream.req.id, None)
        stream.done = stream.aborted = True
        stream.event.set()  # a handler waiting on it returns
        if self.engine.busy:  # a step may be running it: remove it when the next one is scheduled
            self._pending_aborts.append(stream.req)
        else:
            self._remove(stream.req, self.loop.now_s)
        self.wake()

    def _remove(self, req: Request, now_s: float) -> None:
        if req.state.terminal or not self.scheduler.remove(req, now_s):
            return
        req.state = RequestState.ABORTED
        req.finish_s = now_s
        self.num_aborted += 1
        if self.observer:
            self.observer.on_done(req, now_s)

    # ---------------------------------------------------------------- engine callbacks
    def _on_step_end(self, end_s: float) -> None:
        obs = self.observer
        for stream in self.streams.values():
            req = stream.req
            n = req.num_output_tokens
            if req.num_preemptions != stream.num_preemptions:
                stream.num_preemptions = req.num_preemptions
                if obs:
                    obs.on_preemption(req)
            if n > stream.num_ready:  # one token a step (speculative decoding: several)
                if obs:
                    obs.on_token(req, n - stream.num_ready, end_s, stream.last_token_s)
                stream.num_ready = n
                stream.last_token_s = end_s
                stream.event.set()

    def _on_done(self, req: Request, now_s: float) -> None:
        stream = self.streams.pop(req.id, None)
        if stream is None:
            return
        stream.num_ready = req.num_output_tokens
        stream.done = True
        stream.event.set()
        if self.observer:
            self.observer.on_done(req, now_s)


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)
