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
from servesim.core.loop import PRIO_ARRIVAL
from servesim.replica.frontend import FrontEnd
from servesim.replica.engine import Engine
from servesim.replica import moved_runs
from servesim.replica.kv_cache import KVCacheManager
from servesim.replica.schedulers.base import Scheduler
from servesim.replica.chunk_stretch import ChunkStretch, ThroughChunkStretch
from servesim.replica.stretch import Stretch
from servesim.workload.request import Request, RequestState

# Stretches whose growth a read of vLLM's prefix cache from outside takes ahead (`Stretch.take_ahead`;
# not yet admission and speculative stretches, nor SGLang's radix cache)
_TAKE_AHEAD = (Stretch, ChunkStretch, ThroughChunkStretch)

PENDING, LOADING, WARMING, READY, DRAINING, STOPPED = "pending", "loading", "warming", "ready", "draining", "stopped"
PartsFactory = Callable[[], tuple[Scheduler, KVCacheManager]]


class Replica:
    """One engine instance: its scheduler, KV cache, step log and load counters."""

    def __init__(self, index: int, pool: str, engine: Engine, make_parts: PartsFactory,
                 frontend: FrontEnd | None = None) -> None:
        self.index = index
        self.pool = pool
        self.engine = engine
        self.frontend = frontend  # this replica's API server (None: requests reach the engine at once)
        self._in_transit: set[Request] = set()  # in the API server, not yet at the engine
        self._make_parts = make_parts  # a fresh scheduler and KV cache, for a restart
        # called whenever `alive` or `state` is set (the cluster keeps its list of replicas
        # taking requests up to date by it, instead of checking every replica at each arrival)
        self.on_status: Callable[[], None] | None = None
        self._alive = True
        self.num_outstanding = 0  # submitted, not yet terminal
        self.num_dispatched = 0
        self.num_crashes = 0
        self.down_s = 0.0  # total time spent down
        self._down_since = 0.0
        self._snapshot: ReplicaView | None = None  # the last stale view handed out
        # prefix-cache statistics of KV caches replaced by restarts
        self._old_queried = 0
        self._old_hits = 0
        # lifecycle (elastic clusters): pending -> loading -> warming -> ready -> draining -> stopped
        self._state = READY
        self.lifecycle: list[tuple[float, str]] = []  # (time, state entered); empty: ready all run

    # ------------------------------------------------------------------ requests
    def submit(self, req: Request, now_s: float, delay_s: float = 0.0) -> None:
        """Hand a request to the engine at `now_s`, or `delay_s` later (a KV store loading
        its prefix first); the engine may reject it."""
        self._take(req)
        if self.frontend is None and delay_s == 0.0:
            self.engine.add_request(req, now_s)
        else:  # through the API server first; the request keeps its client arrival time
            at_s = (self.frontend.engine_arrival_s(now_s, req.prompt_len) if self.frontend else now_s) + delay_s
            self._in_transit.add(req)
            self.engine.loop.schedule(at_s, self._to_engine, req, PRIO_ARRIVAL)

    def _to_engine(self, now_s: float, req: Request) -> None:
        if req in self._in_transit:  # (not if a crash took it back meanwhile)
            self._in_transit.discard(req)
            self.engine.add_request(req, now_s)

    def receive(self, req: Request, now_s: float) -> None:
        """`req` arrives with its KV computed elsewhere, in blocks reserved here (disaggregation)."""
        self._take(req)
        self.engine.ports.arrive(req, now_s)

    def _take(self, req: Request) -> None:
        self.num_dispatched += 1
        self.num_outstanding += 1
        if req.replica >= 0 and (req.replica != self.index or req.token_steps):
            # moved (after a crash), or back here after this replica's crash with tokens made in
            # its earlier life (an elastic cluster held it meanwhile): remember where each part
            # of its runs was made, and keep its runs here apart from those
            if not req.moves:
                req.moves = [(0, req.replica)]  # (the empty tuple every request starts with)
            req.moves.append((len(req.token_steps), self.index))
            moved_runs.note(self.engine.moved, req)
        req.replica = self.index

    def on_done(self, req: Request) -> None:
        """The engine is done with `req` (finished or rejected)."""
        self.num_outstanding -= 1

    def crash(self, now_s: float) -> list[Request]:
        """Fail at `now_s`: settle, lose the step in flight, and return every request held
        (their progress is forgotten; tokens already emitted stay delivered)."""
        # (in arrival order, as a gateway retries them: the scheduler's own order is a policy's
        # running order, which a stretch in flight holds as its first step's, not as stepping's
        # last `schedule` left it, and the router's draws follow the order)
        evicted = sorted(self.engine.crash(now_s) + list(self._in_transit), key=lambda r: r.id)
        self._in_transit.clear()
        if self.frontend is not None:
            self.frontend = FrontEnd(self.frontend.config, self.frontend.rng)  # the API server restarts too
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

    # ------------------------------------------------------------------ lifecycle
    @property
    def alive(self) -> bool:
        """Up (not crashed and waiting to recover)."""
        return self._alive

    @alive.setter
    def alive(self, value: bool) -> None:
        self._alive = value
        if self.on_status is not None:
            self.on_status()

    @property
    def state(self) -> str:
        """Lifecycle state (`READY` all run unless the cluster is elastic)."""
        return self._state

    @state.setter
    def state(self, value: str) -> None:
        self._state = value
        if self.on_status is not None:
            self.on_status()

    @property
    def accepting(self) -> bool:
        """Takes new requests: alive and ready (not starting, draining or stopped)."""
        return self.alive and self.state == READY

    @property
    def empty(self) -> bool:
        """Holds nothing: no request, and no KV handed off or on its way here (prefill/decode
        pools: a draining replica stops once its last transfer is done)."""
        ports = self.engine.ports
        return self.num_outstanding == 0 and (ports is None or not ports.holds_blocks)

    def set_state(self, now_s: float, state: str) -> None:
        """Enter a lifecycle state (logged with its time)."""
        if state == PENDING and self.state == STOPPED:
            self._fresh_parts(now_s)  # a new engine process: empty scheduler and KV cache
        self.state = state
        self.lifecycle.append((now_s, state))

    def evict_all(self, now_s: float) -> list[Request]:
        """Drain by eviction: settle, take every request out for recompute elsewhere (as a
        crash does, but the replica is healthy and this is not counted as a failure)."""
        evicted = self.crash(now_s)  # (its KV statistics are banked; the cache is replaced below)
        self.num_crashes -= 1
        self.alive = True
        scheduler, kv = self._make_parts()
        self.engine.restart(scheduler, kv)
        return evicted

    def _fresh_parts(self, now_s: float) -> None:
        # the old process's leftovers beyond its requests (Continuum's pins, FastSwitch's CPU
        # copies of contexts) end with it; it held no request, as it stopped empty
        if self.engine.scheduler.drain(now_s):
            raise AssertionError("a stopped replica held requests")
        kv = self.engine.kv
        kv.check_all_free()
        self._old_queried += kv.num_queried_tokens
        self._old_hits += kv.num_hit_tokens
        scheduler, kv = self._make_parts()
        self.engine.restart(scheduler, kv)

    # ------------------------------------------------------------------ reading
    @property
    def prefix_hits(self) -> tuple[int, int]:
        kv = self.engine.kv
        return self._old_queried + kv.num_queried_tokens, self._old_hits + kv.num_hit_tokens

    def view(self, now_s: float, refresh_interval_s: float = 0.0) -> ReplicaView:
        """Load at `now_s`, or as of the last metrics refresh (a multiple of the interval)."""
        if refresh_interval_s <= 0:
            return self._view_at(now_s, lazy=True)
        tick_s = (now_s // refresh_interval_s) * refresh_interval_s
        snap = self._snapshot
        if snap is None or snap.time_s != tick_s:
            # nothing changed here since the tick (see `before_change`), so now is then
            snap = self._snapshot = self._view_at(tick_s)
        # The engine's metrics are as scraped at the tick; the router's own in-flight counter
        # (dispatches minus completions) is always current.
        return ReplicaView(snap.index, snap.pool, snap.time_s, self.outstanding_at(now_s), snap.num_running,
                           snap.num_waiting, snap.kv_used_blocks, snap.num_gpu_blocks,
                           snap.outstanding_prefill_tokens, snap.outstanding_decode_tokens)

    def outstanding_at(self, t: float) -> int:
        """Requests dispatched here and not finished at `t` (the router's in-flight count;
        finishes inside a stretch count from the end of their last step)."""
        st = self.engine.stretch
        return self.num_outstanding if st is None else self.num_outstanding - st.finished_by(t)

    def outstanding_until(self, t: float) -> tuple[int, float]:
        """`outstanding_at(t)`, and up to when (inclusive) it stays that unless an event here
        changes it: the next finish inside the stretch in flight counts only after its step's
        end (`InFlightCounts` keeps the counts between arrivals by it)."""
        st = self.engine.stretch
        if st is None:
            return self.num_outstanding, float("inf")
        n, until = st.finished_until(t)
        return self.num_outstanding - n, until

    def before_change(self, now_s: float, refresh_interval_s: float) -> None:
        """Called before the engine changes state at `now_s`: keep the view a refresh at or
        before `now_s` took, if it was not taken yet (stale views cost nothing per tick)."""
        tick_s = (now_s // refresh_interval_s) * refresh_interval_s
        snap = self._snapshot
        if snap is None or snap.time_s < tick_s:
            self._snapshot = self._view_at(tick_s)

    def _view_at(self, t: float, lazy: bool = False) -> ReplicaView:
        """The replica's load at `t` (>= the last change here): counts now, the rest on first
        access when `lazy` (a live view, used before anything changes), else at once."""
        e = self.engine
        sched = e.scheduler
        outstanding, running = self.num_outstanding, sched.num_running
        st = e.stretch
        j = 0
        if st is not None:
            j = st.step_in_flight(t)
            gone = st.finished_before(j)  # finished in steps before j, processed at the stretch's end
            outstanding -= gone
            running -= gone
        view = ReplicaView(self.index, self.pool, t, outstanding, running, sched.num_waiting + len(sched.swapped),
                           num_gpu_blocks=e.kv.num_gpu_blocks, lazy=lambda: self._rest(st, j))
        if not lazy:
            view.kv_used_blocks  # noqa: B018  (computed now: the state will change before it is read)
        return view

    def _rest(self, st, j: int) -> tuple[int, int, int]:
        """KV blocks in use, prompt tokens and output tokens outstanding, `j` steps into the
        stretch `st` (0: none)."""
        sched = self.engine.scheduler
        prefill = sum(r.num_tokens - r.num_computed_tokens for r in sched.running
                      if r.num_computed_tokens < r.num_tokens)
        prefill += sum(r.num_tokens for r in sched.waiting)
        decode = sum(r.output_len - r.num_output_tokens for r in sched.unfinished())
        if j:
            # a prompt finished in step 0 is left with its first token to compute, as decodes
            # (a prompt in progress has computed its chunks); a request that finished before
            # step j (processed at the stretch's end) has none
            prefill -= st.prompt_tokens_before(j) + st.finished_before(j)
            decode -= st.tokens_before(j)
        return self.used_blocks(j, st), prefill, decode

    def used_blocks(self, j: int, st=None) -> int:
        """KV blocks in use `j` steps into the stretch `st` (default: the one in flight; j = 0:
        none, or no stretch)."""
        kv = self.engine.kv
        used = kv.num_gpu_blocks - kv.num_free_blocks
        if j:
            st = st or self.engine.stretch
            used += st.blocks_added(j, kv.block_size, st.freed_blocks(kv) if type(st) is Stretch
                                    else lambda req: kv.num_blocks_of(req.id))
        return used

    def running_at(self, t: float) -> tuple[int, int]:
        """(requests running at `t`, the step of the stretch in flight then, 0: none): a view's
        `num_running`, and what `used_blocks` takes for its `kv_used_blocks`, without the rest
        of a view (the migrator reads them every polling interval)."""
        st = self.engine.stretch
        running = self.engine.scheduler.num_running
        if st is None:
            return running, 0
        j = st.step_in_flight(t)
        return running - st.finished_before(j), j

    def lora_state(self, name: str) -> tuple[bool, bool]:
        """(adapter `name` on this GPU or loading, a slot could take it now)."""
        sched = self.engine.scheduler
        cache = getattr(sched, "lora", None)
        if cache is None:
            return False, True
        running = sched.running
        st = self.engine.stretch
        if st is not None:
            n = st.finished_by(self.engine.loop.now_s)
            if n:
                # (stepping removed them from `running` at their last step's end; the stretch
                # keeps them there until it is applied, and their adapters would read as pinned)
                gone = set(map(id, st.departed(n)))
                running = [r for r in running if id(r) not in gone]
        return cache.state(name, (r.lora for r in running))

    def cached_blocks(self, req: Request) -> int:
        """Leading prefix blocks of `req` (its `hash_block_tokens` blocks) in this replica's cache."""
        if not req.hash_ids:
            return 0
        kv = self.engine.kv
        if self.engine.keyed_joins:  # (turned on only where nothing reads the cache from outside)
            raise AssertionError("a prefix cache read from outside with keyed joins on")
        st = self.engine.stretch
        if st is not None and type(st) in _TAKE_AHEAD and type(kv) is KVCacheManager:  # (its steps' pops so far)
            now_s = self.engine.loop.now_s
            if type(st) is ChunkStretch:  # (a vLLM prompt's chunks register its blocks as they run)
                st.settle(kv, now_s)
            st.take_ahead(kv, now_s)
        return kv.num_cached_prefix_tokens(req) // req.hash_block_tokens
