"""A replica behind a wall: the one interface the cluster uses to reach an engine.

The engine fast-forwards decode-only stretches, so its request objects lag behind virtual
time while a stretch is in flight. The wall hides that:

- `submit(req, t)` cuts the stretch in flight at `t` (the scheduler sees the request at the
  next step boundary, exactly as if the engine had stepped one by one);
- `view(t)` reads the replica's load at `t` without changing anything: the steps of the
  stretch that ended before `t` are counted arithmetically;
- `crash(t)` settles the replica to `t` (applies the steps that ended before `t`, loses the
  one in flight), takes every request out and returns them for re-routing; `recover` brings
  the replica back empty, with a fresh scheduler and KV cache, as a restarted engine is.

Requests are recorded by the cluster at its entry, not here. Each replica keeps its own step
log; a request's token runs are indices into the log of the replica that produced them
(`Request.replica`, and `Request.moves` when it changed replica).
"""

from __future__ import annotations

from typing import Callable

from servesim.cluster.view import ReplicaView
from servesim.replica.engine import Engine
from servesim.replica.kv_cache import KVCacheManager
from servesim.replica.schedulers.base import Scheduler
from servesim.workload.request import Request, RequestState

PartsFactory = Callable[[], tuple[Scheduler, KVCacheManager]]


class Replica:
    """One engine instance: its scheduler, KV cache, step log and load counters."""

    def __init__(self, index: int, pool: str, engine: Engine, make_parts: PartsFactory) -> None:
        self.index = index
        self.pool = pool
        self.engine = engine
        self._make_parts = make_parts  # a fresh scheduler and KV cache, for a restart
        self.alive = True
        self.num_outstanding = 0  # submitted, not yet terminal
        self.num_dispatched = 0
        self.num_crashes = 0
        self.down_s = 0.0  # total time spent down
        self._down_since = 0.0
        self._snapshot: ReplicaView | None = None  # the last stale view handed out
        # prefix-cache statistics of KV caches replaced by restarts
        self._old_queried = 0
        self._old_hits = 0

    # ------------------------------------------------------------------ requests
    def submit(self, req: Request, now_s: float) -> None:
        """Hand a request to the engine at `now_s` (it may reject it)."""
        self._take(req)
        self.engine.add_request(req, now_s)

    def receive(self, req: Request, now_s: float) -> None:
        """`req` arrives with its KV computed elsewhere, in blocks reserved here (disaggregation)."""
        self._take(req)
        self.engine.ports.arrive(req, now_s)

    def _take(self, req: Request) -> None:
        self.num_dispatched += 1
        self.num_outstanding += 1
        if req.replica != self.index:
            if req.replica >= 0:  # moved (after a crash): remember where each part of its runs was made
                if not req.moves:
                    req.moves.append((0, req.replica))
                req.moves.append((len(req.token_steps), self.index))
            req.replica = self.index

    def on_done(self, req: Request) -> None:
        """The engine is done with `req` (finished or rejected)."""
        self.num_outstanding -= 1

    def crash(self, now_s: float) -> list[Request]:
        """Fail at `now_s`: settle, lose the step in flight, and return every request held
        (their progress is forgotten; tokens already emitted stay delivered)."""
        evicted = self.engine.crash(now_s)
        self.num_outstanding -= len(evicted)
        kv = self.engine.kv
        kv.check_all_free()  # conservation at the moment of the crash
        self._old_queried += kv.num_queried_tokens
        self._old_hits += kv.num_hit_tokens
        self.alive = False
        self.num_crashes += 1
        self._down_since = now_s
        for req in evicted:
            req.state = RequestState.WAITING
            req.num_computed_tokens = 0
        return evicted

    def recover(self, now_s: float) -> None:
        """Come back empty, with a fresh scheduler and KV cache."""
        scheduler, kv = self._make_parts()
        self.engine.restart(scheduler, kv)
        self.alive = True
        self.down_s += now_s - self._down_since

    # ------------------------------------------------------------------ reading
    @property
    def prefix_hits(self) -> tuple[int, int]:
        kv = self.engine.kv
        return self._old_queried + kv.num_queried_tokens, self._old_hits + kv.num_hit_tokens

    def view(self, now_s: float, refresh_interval_s: float = 0.0) -> ReplicaView:
        """Load at `now_s`, or as of the last metrics refresh (a multiple of the interval)."""
        if refresh_interval_s <= 0:
            return self._view_at(now_s)
        tick_s = (now_s // refresh_interval_s) * refresh_interval_s
        snap = self._snapshot
        if snap is None or snap.time_s != tick_s:
            # nothing changed here since the tick (see `before_change`), so now is then
            snap = self._snapshot = self._view_at(tick_s)
        return snap

    def before_change(self, now_s: float, refresh_interval_s: float) -> None:
        """Called before the engine changes state at `now_s`: keep the view a refresh at or
        before `now_s` took, if it was not taken yet (stale views cost nothing per tick)."""
        tick_s = (now_s // refresh_interval_s) * refresh_interval_s
        snap = self._snapshot
        if snap is None or snap.time_s < tick_s:
            self._snapshot = self._view_at(tick_s)

    def _view_at(self, t: float) -> ReplicaView:
        e = self.engine
        sched, kv = e.scheduler, e.kv
        running = sched.num_running
        used = kv.num_gpu_blocks - kv.num_free_blocks
        prefill = sum(r.num_tokens - r.num_computed_tokens for r in sched.running
                      if r.num_computed_tokens < r.num_tokens)
        prefill += sum(r.num_tokens for r in sched.waiting)
        decode = sum(r.output_len - r.num_output_tokens for r in sched.unfinished())
        outstanding = self.num_outstanding
        st = e.stretch
        if st is not None:
            j = min(st.steps_before(t), len(st.ends) - 1)  # step j is in flight at t
            if j:
                gone = st.finished_before(j)
                outstanding -= gone
                running -= gone
                used += _stretch_blocks(st, j, kv.block_size, kv)
                prefill -= sum(n for _, n in st.prefills)
                decode -= sum(st.sizes[:j])
        return ReplicaView(self.index, self.pool, t, outstanding, running, sched.num_waiting + len(sched.swapped),
                           used, kv.num_gpu_blocks, prefill, decode)

    def cached_blocks(self, req: Request) -> int:
        """Leading prefix blocks of `req` (its `hash_block_tokens` blocks) in this replica's cache."""
        if not req.hash_ids:
            return 0
        kv = self.engine.kv
        return kv.num_cached_prefix_tokens(req) // req.hash_block_tokens


def _stretch_blocks(st, j: int, bs: int, kv: KVCacheManager) -> int:
    """Blocks the stretch added by step j (allocated at steps 1..j), less those freed by
    requests that finished before step j."""
    delta = 0
    for i, (f, r) in enumerate(zip(st.first_new, st.remaining)):
        last = min(j, r - 1)  # the request's last step at or before j
        if f <= last:
            delta += (last - f) // bs + 1
        if r <= j:  # finished in step r - 1 < j: everything it held is free again
            delta -= kv.num_blocks_of(st.reqs[i].id) + (max(0, (r - 1 - f) // bs + 1) if f <= r - 1 else 0)
    return delta
