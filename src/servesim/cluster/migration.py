"""Llumnix live migration: pair loaded and free replicas, move running requests with a
multi-stage KV copy while they keep decoding, and a short stop-and-copy at the end.

Every `polling_interval_s` the migrator computes each live replica's migrate load, negated
freeness: n = running (+1 if a request waits), available = free blocks - watermark (- the
head-of-line request's blocks if one waits), load = -available / n (-inf when n = 0). Sources
have load > -threshold, destinations load < -threshold; sorted sources (most loaded first) pair
with sorted destinations (least loaded first), as Llumnix's `defrag` pairing. A source takes
part in one migration at a time (`max_migration_concurrency` 1).

A migration (each step at a step boundary of the replica concerned, so state is exact and
fast-forward stays exact):
1. source: pick the last running request that is decoding (LCFS); destination: reserve its
   blocks (abort if they are not free);
2. stage k copies the blocks written since the previous stage (all of them in stage 1) at
   `bandwidth_GBps` plus `latency_s`, while the request keeps decoding on the source;
3. at the end of a stage, on the source: if the request left (finished, preempted) abort; if
   at most `last_stage_max_blocks` remain, stop it (taken out of the source batch) and copy them:
   the downtime; it then joins the destination's batch. After `max_stages` stages: abort.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from servesim.cluster.config import MigrationConfig
from servesim.core.loop import PRIO_ARRIVAL
from servesim.replica.kv_cache import cdiv
from servesim.replica.replica import DRAINING, READY
from servesim.workload.request import Request, RequestState


@dataclass(slots=True)
class Migration:
    """One request's move (times in seconds)."""

    src: int
    dst: int
    req: Request | None = None
    start_s: float = 0.0
    stop_s: float = -1.0  # stop-and-copy began (the request left the source)
    end_s: float = -1.0  # joined the destination
    num_stages: int = 0
    copied_blocks: int = 0
    reserved_blocks: int = 0  # held for it at the destination
    aborted: str = ""
    drain: bool = False  # its source was warned of a crash


class Migrator:
    """Periodic pairing and the migration state machine over the cluster's replicas."""

    def __init__(self, cluster, cfg: MigrationConfig, kv_bytes_per_block: list[int], active) -> None:
        self.cluster = cluster
        self.cfg = cfg
        self.kv_bytes_per_block = kv_bytes_per_block  # per replica, all TP shards
        self.active = active  # does the run go on?
        self.migrations: list[Migration] = []
        self._busy: set[int] = set()  # replicas in a migration (as source or destination)
        self._draining: set[int] = set()  # warned of a coming crash: migrate out, take nothing new

    def start(self) -> None:
        self.cluster.crash_hooks.append(self.on_crash)
        self.cluster.loop.schedule(self.cfg.polling_interval_s, self._tick, None, PRIO_ARRIVAL)

    # ------------------------------------------------------------------ pairing
    def load(self, i: int, now_s: float) -> float:
        """Llumnix's migrate load of replica i at `now_s` (exact: the wall's view)."""
        rep = self.cluster.replicas[i]
        sched, kv = rep.engine.scheduler, rep.engine.kv
        n, j = rep.running_at(now_s)
        waiting = sched.num_waiting
        if not (n or waiting):
            return -math.inf  # (an idle replica: its blocks are not read)
        total = kv.num_gpu_blocks
        avail = total - rep.used_blocks(j) - self.cfg.watermark * total
        if waiting:
            n += 1
            avail -= cdiv(sched.waiting_head().num_tokens, kv.block_size)
        return -avail / n

    def _tick(self, now_s: float, _) -> None:
        if not self.active():
            return
        self.cluster.loop.schedule(now_s + self.cfg.polling_interval_s, self._tick, None, PRIO_ARRIVAL)
        thr = -self.cfg.migrate_out_threshold
        reps = self.cluster.replicas
        self._draining = {i for i in self._draining if reps[i].state == DRAINING}  # re-admitted or stopped
        live = [i for i, r in enumerate(reps) if r.alive and r.state in (READY, DRAINING) and i not in self._busy]
        if len(live) < 2:
            return
        loads = {i: self.load(i, now_s) for i in live}
        order = sorted(live, key=lambda i: (loads[i], i))
        # a replica warned of its failure, or being scaled in, migrates out whatever its load, to
        # the freest replicas that take requests
        draining = [i for i in live if i in self._draining]
        free = [i for i in order if reps[i].state == READY]
        pairs = list(zip(draining, free))
        free = free[len(pairs):]
        pairs += zip([i for i in reversed(free) if loads[i] > thr], [i for i in free if loads[i] < thr])
        for s, d in pairs:
            m = Migration(s, d, start_s=now_s, drain=s in self._draining)
            self._busy |= {s, d}
            self.migrations.append(m)
            self._ports(s).call(lambda t, m=m: self._pick(m, t), now_s)

    # ------------------------------------------------------------------ the state machine
    def _ports(self, i: int):
        return self.cluster.replicas[i].engine.ports

    def _pick(self, m: Migration, now_s: float) -> None:
        """At the source's boundary: the last running request that decodes (LCFS), in the
        policy's batch order (`Scheduler.running_order_key`: a policy that sorts its batch)."""
        if m.aborted:
            return  # a replica crashed meanwhile
        sched = self.cluster.replicas[m.src].engine.scheduler
        key = sched.running_order_key()
        running = sched.running if key is None else sorted(sched.running, key=key)
        req = next((r for r in reversed(running) if r.is_decoding and r.remaining_output > 1), None)
        if req is None:
            return self._end(m, "no decoding request")
        m.req = req
        first = self._src_blocks(m) - 1  # stage 1: all but the block being written (counted here, exactly)
        dst = self.cluster.replicas[m.dst].engine
        need = dst.scheduler.transfer_tokens(req, min(req.prompt_len + req.output_len, req.num_computed_tokens
                                                      + self.cfg.last_stage_max_blocks * dst.kv.block_size))
        self._ports(m.dst).call(lambda t: self._reserve(m, need, first, t), now_s)

    def _reserve(self, m: Migration, num_tokens: int, num_blocks: int, now_s: float) -> None:
        """At the destination's boundary (the source may be inside a stretch: not read here)."""
        if m.aborted:
            return
        ports = self._ports(m.dst)
        if not ports.reserve_now(m.req, num_tokens):
            return self._end(m, "no room at the destination")
        m.reserved_blocks = ports.engine.kv.num_blocks_of(m.req.id)
        self._copy(m, num_blocks, now_s, self._after_stage)

    def _src_blocks(self, m: Migration) -> int:
        return self.cluster.replicas[m.src].engine.kv.num_blocks_of(m.req.id)

    def _copy(self, m: Migration, num_blocks: int, now_s: float, then) -> None:
        m.num_stages += 1
        m.copied_blocks += num_blocks
        t = num_blocks * self.kv_bytes_per_block[m.src] / (self.cfg.bandwidth_GBps * 1e9) + self.cfg.latency_s
        self.cluster.loop.schedule(now_s + t, lambda t2, _: then(m, t2), None, PRIO_ARRIVAL)

    def _after_stage(self, m: Migration, now_s: float) -> None:
        if m.aborted:
            return
        self._ports(m.src).call(lambda t: self._next_stage(m, t), now_s)

    def _next_stage(self, m: Migration, now_s: float) -> None:
        """At the source's boundary after a stage: stop-and-copy, another stage, or abort."""
        if m.aborted:
            return
        src = self.cluster.replicas[m.src]
        req = m.req
        if not any(r is req for r in src.engine.scheduler.running) or not req.is_decoding:
            self._ports(m.dst).call(lambda t: self._ports(m.dst).cancel(req), now_s)
            return self._end(m, "request left the source")
        left = self._src_blocks(m) - m.copied_blocks
        stop = left <= self.cfg.last_stage_max_blocks
        if not stop and m.num_stages >= self.cfg.max_stages:
            self._ports(m.dst).call(lambda t: self._ports(m.dst).cancel(req), now_s)
            return self._end(m, "stages exhausted")
        blocks = m.copied_blocks + (max(left, 0) if stop else left - 1)
        if blocks > m.reserved_blocks:
            # (the request grew past what the destination holds for it, a long step on the
            # source having delayed the stage: Llumnix allocates each stage's blocks there
            # first, then this decides again at the source)
            return self._ports(m.dst).call(lambda t: self._grow(m, blocks, t), now_s)
        if stop:
            src.engine.scheduler.remove(req, now_s)  # stop: its blocks on the source are freed
            src.num_outstanding -= 1
            self.cluster.router.on_complete(req, m.src, now_s)
            self.cluster.stop_if_drained(src, now_s)
            m.stop_s = now_s
            return self._copy(m, max(left, 0), now_s, self._arrive)
        self._copy(m, left - 1, now_s, self._after_stage)

    def _grow(self, m: Migration, num_blocks: int, now_s: float) -> None:
        """At the destination's boundary: hold `num_blocks` for the request there (abort if they
        do not fit), then decide the stage again at the source."""
        if m.aborted:
            return
        ports = self._ports(m.dst)
        if not ports.grow(m.req, num_blocks - m.reserved_blocks):
            ports.cancel(m.req)
            return self._end(m, "no room at the destination")
        m.reserved_blocks = num_blocks
        self._ports(m.src).call(lambda t: self._next_stage(m, t), now_s)

    def _arrive(self, m: Migration, now_s: float) -> None:
        if m.aborted:
            return
        m.end_s = now_s

        self.cluster.router.on_dispatch(m.req, m.dst, now_s)
        self.cluster.replicas[m.dst].receive(m.req, now_s)
        self._end(m, "")

    def drain(self, index: int, now_s: float) -> None:
        """Replica `index` will fail soon (a crash with `warning_s`) or is being scaled in
        (`autoscaler.scale_down: migrate`): it takes no new request and, from the next tick on,
        migrates its decoding requests out one at a time, to the freest other replicas, until
        it crashes (what is left then is recomputed elsewhere) or runs empty and stops."""
        rep = self.cluster.replicas[index]
        if rep.alive and rep.state in (READY, DRAINING):
            if rep.state == READY:
                rep.set_state(now_s, DRAINING)
            self._draining.add(index)

    def on_crash(self, index: int, now_s: float) -> None:
        """Replica `index` is about to crash: its migrations are aborted. A request still on
        the source stays there (and is re-routed with the source's other requests if the
        source is the one crashing); one stopped for its last copy is re-routed and recomputed;
        a reservation on a live destination is given back. The replica's ports are reset."""
        c = self.cluster
        for m in self.migrations:
            if m.end_s >= 0 or m.aborted or index not in (m.src, m.dst):
                continue
            self._end(m, "replica crashed")
            req = m.req
            if req is None:
                continue  # not picked yet
            if m.dst != index:
                c.replicas[m.dst].engine.ports.forget(req, now_s)
            if m.stop_s >= 0:  # on neither replica
                req.state = RequestState.WAITING
                req.num_computed_tokens = 0
                c.redispatch([req], m.src, now_s, left=True)
        c.replicas[index].engine.ports.reset()
        if index in self._draining:  # it comes back (if it does) ready
            self._draining.discard(index)
            c.replicas[index].set_state(now_s, READY)

    def _end(self, m: Migration, aborted: str) -> None:
        m.aborted = aborted
        self._busy -= {m.src, m.dst}
