"""The scale controller: a periodic decision loop that starts and drains replicas of one pool
(an autoscaler over several pools runs one controller per pool).

Every `interval_s` (only while the run is active) it scrapes the pool into a `Sample`
(ready replicas' views at that instant, arrivals since the last scrape), hands the
autoscaler the samples at least `scrape_delay_s` old, clamps the answer to
[min_replicas, max_replicas] and logs the decision. Scaling up re-admits a draining replica
first, then starts a stopped one through pending -> loading -> warming -> ready (the cold
start); scaling down cancels a starting replica first, then drains the ready replica
holding the fewest requests. Replicas of the pool exist from the start (stopped ones hold
nothing), so indices, seeds and routers never change size mid-run.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable

from servesim.cluster.autoscalers import Autoscaler, Sample, get_autoscaler
from servesim.cluster.autoscalers.base import Capacity, since
from servesim.cluster.cluster import Cluster
from servesim.cluster.coldstart import phase_times_s
from servesim.cluster.config import AutoscalerConfig
from servesim.core.loop import PRIO_ARRIVAL, EventLoop
from servesim.replica.replica import DRAINING, LOADING, PENDING, READY, STOPPED, WARMING, Replica

STARTING = (PENDING, LOADING, WARMING)


@dataclass(frozen=True)
class ScaleEvent:
    """One decision of the autoscaler (every tick is logged, changes or not)."""

    time_s: float
    num_ready: int
    num_starting: int
    num_draining: int
    num_queued: int
    metric: float  # the value the policy decided on (its own unit: concurrency, freeness, rate ...)
    desired: int  # after clamping to [min_replicas, max_replicas]
    action: str  # up, down or hold
    delta: int  # replicas started (+) or stopped/drained (-)
    pool: str  # the pool decided on


class ScaleController:
    """Runs one autoscaler over the replicas `indices` of the cluster."""

    def __init__(self, cfg: AutoscalerConfig, scaler: Autoscaler, cluster: Cluster, loop: EventLoop,
                 indices: list[int], phases_s: dict[str, float], active: Callable[[], bool],
                 drain: Callable[[int, float], None] | None = None) -> None:
        self.cfg, self.scaler, self.cluster, self.loop = cfg, scaler, cluster, loop
        self.drain = drain  # migrates a scaled-in replica's requests out (scale_down: migrate)
        self.replicas: list[Replica] = [cluster.replicas[i] for i in indices]
        self.pool = self.replicas[0].pool
        self.min_replicas, self.max_replicas = cfg.bounds(self.pool)
        self.phases_s = phases_s  # pending, loading, warming durations
        self.active = active
        self.interval_s = cfg.interval_s or type(scaler).default_interval_s
        # the scrapes the policy sees (at least `scrape_delay_s` old, oldest first; those older than
        # its `history_s` dropped), and those not old enough yet: each moves over once, so a tick
        # costs the same and the list holds as much at any hour of the run
        self.visible: list[Sample] = []
        self._pending: deque[Sample] = deque()
        self.events: list[ScaleEvent] = []
        self.cold_starts_s: list[float] = []  # decision to ready, per completed start
        self._gen = {r.index: 0 for r in self.replicas}  # voids the phase events of a cancelled start
        self._started_s: dict[int, float] = {}
        self._last = (0.0, 0, 0, 0)  # (time, arrivals, prompt tokens, output tokens) at the last scrape
        cluster.hold = True
        cluster.on_drained = self._drained

    def start(self) -> None:
        self.loop.schedule(self.interval_s, self._tick, None, PRIO_ARRIVAL)

    def _count(self, states) -> int:
        return sum(r.state in states for r in self.replicas)

    # ------------------------------------------------------------------ the loop
    def _tick(self, now_s: float, _) -> None:
        if not self.active():
            return  # the run is over: no more decisions
        lost = self.cluster.lost
        for r in self.replicas:
            if r.state == DRAINING and r.empty:  # (emptied by a crash, or its last KV hand-off done)
                r.set_state(now_s, STOPPED)
            elif r.index in lost and r.state != STOPPED:
                # crashed for good: no longer counted as capacity, so the policy starts a
                # replacement (a ReplicaSet replaces a pod whose node is gone)
                self._gen[r.index] += 1
                r.set_state(now_s, STOPPED)
        pending, visible = self._pending, self.visible
        pending.append(self._scrape(now_s))
        while pending and pending[0].time_s <= now_s - self.cfg.scrape_delay_s:
            visible.append(pending.popleft())
        if len(visible) > 512:  # drop what the policy no longer reads, in chunks (at most twice what it keeps)
            old = since(visible, visible[-1].time_s - self.scaler.history_s(self.interval_s))
            if 2 * old > len(visible):
                del visible[:min(old, len(visible) - 1)]
        if visible:
            self._decide(now_s, visible)
        self.loop.schedule(now_s + self.interval_s, self._tick, None, PRIO_ARRIVAL)

    def _scrape(self, now_s: float) -> Sample:
        c = self.cluster
        t0, a0, p0, o0 = self._last
        self._last = (now_s, c.num_arrivals, c.arrived_prompt_tokens, c.arrived_output_tokens)
        views = tuple(r.view(now_s) for r in self.replicas if r.state == READY and r.alive)
        return Sample(now_s, views, self._count(STARTING), self._count((DRAINING,)), len(c.queue),
                      c.num_arrivals - a0, c.arrived_prompt_tokens - p0, c.arrived_output_tokens - o0, now_s - t0)

    def _decide(self, now_s: float, visible: list[Sample]) -> None:
        current = self._count((READY,) + STARTING)
        want, metric = self.scaler.desired(now_s, visible, current)
        want = min(max(want, self.min_replicas), self.max_replicas)
        if want == 0 and (self.cluster.queue or any(r.num_outstanding for r in self.replicas)):
            # Zero only once nothing is left to serve (Knative scales to zero after the traffic
            # stops): a policy that sees no arrivals in its window would otherwise evict or
            # strand requests still running or queued, and with `scale_down: evict` bounce them
            # between a cold start and the queue for ever.
            want = 1
        delta = want - current
        if delta > 0:
            delta = sum(self._up(now_s) for _ in range(delta))
        elif delta < 0:
            delta = -sum(self._down(now_s) for _ in range(-delta))
        s = self._pending[-1] if self._pending else visible[-1]  # (the newest scrape)
        self.events.append(ScaleEvent(now_s, s.num_ready, s.num_starting, s.num_draining, s.num_queued, float(metric),
                                      want, "up" if delta > 0 else "down" if delta < 0 else "hold", delta, self.pool))

    # ------------------------------------------------------------------ up
    def _up(self, now_s: float) -> int:
        draining = [r for r in self.replicas if r.state == DRAINING]
        if draining:  # cheapest capacity: it is still warm
            draining[-1].set_state(now_s, READY)
            self.cluster.flush_queue(now_s)
            return 1
        stopped = [r for r in self.replicas if r.state == STOPPED and r.index not in self.cluster.lost]
        if not stopped:
            return 0
        r = stopped[0]
        r.set_state(now_s, PENDING)
        self._gen[r.index] += 1
        self._started_s[r.index] = now_s
        t = now_s + self.phases_s["pending"]
        self.loop.schedule(t, self._phase, (r, LOADING, self._gen[r.index]), PRIO_ARRIVAL)
        t += self.phases_s["loading"]
        self.loop.schedule(t, self._phase, (r, WARMING, self._gen[r.index]), PRIO_ARRIVAL)
        t += self.phases_s["warming"]
        self.loop.schedule(t, self._phase, (r, READY, self._gen[r.index]), PRIO_ARRIVAL)
        return 1

    def _phase(self, now_s: float, payload) -> None:
        r, state, gen = payload
        if gen != self._gen[r.index] or r.state == STOPPED:
            return  # this start was cancelled
        r.set_state(now_s, state)
        if state == READY:
            self.cold_starts_s.append(now_s - self._started_s[r.index])
            self.cluster.flush_queue(now_s)

    # ------------------------------------------------------------------ down
    def _down(self, now_s: float) -> int:
        starting = [r for r in self.replicas if r.state in STARTING]
        if starting:
            r = max(starting, key=lambda x: (self._started_s[x.index], x.index))  # the latest start
            self._gen[r.index] += 1
            r.set_state(now_s, STOPPED)
            return 1
        ready = [r for r in self.replicas if r.state == READY and r.alive]
        if not ready:
            return 0
        r = min(ready, key=lambda x: (x.view(now_s).num_outstanding, -x.index))
        r.set_state(now_s, DRAINING)
        if self.cfg.scale_down == "migrate" and r.num_outstanding and self.drain is not None:
            self.drain(r.index, now_s)
        elif self.cfg.scale_down == "evict" and r.num_outstanding:
            # (stopped at once: its live migrations end as at a crash, `Cluster.leaving`)
            self.cluster.leaving(r.index, now_s)
            evicted = r.evict_all(now_s)
            r.set_state(now_s, STOPPED)
            self.cluster.redispatch(evicted, r.index, now_s)
        elif r.empty:
            self.cluster.leaving(r.index, now_s)
            r.set_state(now_s, STOPPED)
        return 1

    def _drained(self, replica: Replica, now_s: float) -> None:
        replica.set_state(now_s, STOPPED)


#: Context length at which decode capacity is estimated (a typical chat/code request mid-way).
CAPACITY_CONTEXT_TOKENS = 1024


def pool_capacity(pool, cold_start_s: float) -> Capacity:
    """One replica's throughput from the perf model: a full token budget of prefill, and the
    largest decode batch that fits (max_num_seqs, or KV at `CAPACITY_CONTEXT_TOKENS` each)."""
    cfg, perf = pool.config, pool.perf
    budget = cfg.max_num_batched_tokens
    prefill = budget / perf.step_time_s([(budget, 0)], [])
    n = max(1, min(cfg.max_num_seqs, pool.num_gpu_blocks * cfg.block_size // CAPACITY_CONTEXT_TOKENS))
    decode = n / perf.step_time_s([], [CAPACITY_CONTEXT_TOKENS] * n)
    return Capacity(prefill, decode, cfg.max_num_seqs, pool.num_gpu_blocks, cfg.block_size, cold_start_s, pool.role)


def build_controller(cfg: AutoscalerConfig, pool, cluster: Cluster, loop: EventLoop, indices: list[int],
                     active: Callable[[], bool], drain: Callable[[int, float], None] | None = None) -> ScaleController:
    """The scaler named in `cfg`, with its parameters and the pool's capacity, in a controller."""
    phases = phase_times_s(cfg.cold_start, pool.perf.weight_bytes_per_gpu)
    cls = get_autoscaler(cfg.name)
    scaler = cls(cfg.params(), pool_capacity(pool, sum(phases.values())), *cfg.bounds(pool.name))
    return ScaleController(cfg, scaler, cluster, loop, indices, phases, active, drain)


def start_controllers(cfg: AutoscalerConfig | None, scaled: list[tuple[object, int]], pools: list, cluster: Cluster,
                      loop: EventLoop, active: Callable[[], bool],
                      drain: Callable[[int, float], None] | None = None) -> list[ScaleController]:
    """A started controller per scaled pool (`scaled_pools`), over its replicas and then its
    spares (the cluster's last replicas, in `scaled`'s order)."""
    controllers = []
    spare = len(cluster.replicas) - sum(extra for _, extra in scaled)
    for pool, extra in scaled:
        first = sum(p.replicas for p in pools[:pools.index(pool)])
        indices = list(range(first, first + pool.replicas)) + list(range(spare, spare + extra))
        spare += extra
        controllers.append(build_controller(cfg, pool, cluster, loop, indices, active, drain))
        controllers[-1].start()
    return controllers


def scaled_pools(cfg: AutoscalerConfig | None, pools: list) -> list[tuple[object, int]]:
    """The pools the autoscaler scales, each with how many replicas it may add to its initial
    count (its spares, stopped until scaled up)."""
    if cfg is None:
        return []
    by_name = {p.name: p for p in pools}
    return [(by_name[name], max(0, cfg.bounds(name)[1] - by_name[name].replicas))
            for name in cfg.pool_names([p.name for p in pools])]
