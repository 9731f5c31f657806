"""The engine's lifecycle outside the step loop: clock changes, crashes, restarts, the end.

`Engine` (`replica/engine.py`) runs the step loop; this mixin owns the calls a cluster makes
on a replica from outside it: a new perf model (power capping, frequency locking), a crash
(the stretch's ended steps applied, the step in flight lost, every request handed back), a
restart with a fresh scheduler and KV cache, and the end of the run (requests still held are
dropped). Separate because none of it runs per step; it reads and resets the loop's state
(`stretch`, `_epoch`, `busy`, `_wake_s`, set by `Engine.__init__`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from servesim.replica.fast_forward import DecodeFns
from servesim.workload.request import Request, RequestState

if TYPE_CHECKING:
    from servesim.replica.kv_cache import KVCacheManager
    from servesim.replica.schedulers.base import Scheduler


class EngineLifecycle:
    """`Engine`'s clock change, crash, restart and end of run."""

    __slots__ = ()  # (`Engine` holds the state in its slots)

    # ------------------------------------------------------------------ clock
    def set_perf(self, perf, now_s: float) -> None:
        """Steps that start after `now_s` are timed by `perf` (a clock change: power capping,
        frequency locking). The step in flight keeps its time, as on a GPU; a fast-forwarded
        stretch is cut there, exactly as an arrival cuts it."""
        self._cut(now_s)
        self.perf = perf
        self.decode_fns = DecodeFns(perf)

    # ------------------------------------------------------------------ failures
    def crash(self, now_s: float) -> list[Request]:
        """Stop at `now_s`: apply the stretch steps that ended before it, lose the step in
        flight, release every request's KV and return the requests (unfinished, in the
        scheduler's order: running, waiting, swapped)."""
        if self.on_change:
            self.on_change(now_s)
        st = self.stretch
        if st is not None:
            self.stretch = None
            st.gen += 1  # its end event is void
            j = st.steps_before(now_s)
            if j:
                st.truncate(j)
                done = self._apply_stretch(st)
                for req in done:
                    req.state = RequestState.FINISHED
                    self.scheduler.finish(req, now_s)
                for req in done:
                    self.on_done(req, now_s)
        self._epoch += 1  # a plain step in flight, a pending start or wake-up: all void
        self.busy = False
        self._wake_s = float("inf")
        return self.scheduler.drain(now_s)

    def restart(self, scheduler: Scheduler, kv: KVCacheManager) -> None:
        """Come back with a fresh scheduler and KV cache (a restarted engine)."""
        scheduler.resume_at(self.num_steps)
        self.scheduler = scheduler
        self._policy_checks()
        self.kv = kv
        self._link_free_s = [0.0, 0.0]

    # ------------------------------------------------------------------ end of run
    def drain(self, now_s: float) -> None:
        """Mark every request still held as dropped (the run stopped before they finished),
        with those whose KV was coming here."""
        held = self.scheduler.drain(now_s)
        if self.ports is not None:
            held += self.ports.drain()
        for req in held:
            req.state = RequestState.DROPPED
            req.finish_s = now_s
