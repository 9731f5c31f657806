"""Replicas behind a router: dispatch, stale metrics, failures and re-routing.

Every request enters here (`arrive`), is recorded once, and is routed to one eligible
replica: a live replica of a pool that serves the request's model. A router may shed it
(rejected). When a replica crashes, the requests it held are re-routed and recomputed; their
tokens already delivered stay delivered. With no replica left they fail. The replica comes
back after its recovery time, empty.
"""

from __future__ import annotations

from collections import Counter, deque
from functools import partial
from typing import TYPE_CHECKING, Callable

import numpy as np

from servesim.cluster.counts import InFlightCounts
from servesim.cluster.routers import Router
from servesim.cluster.view import ClusterView
from servesim.core.loop import PRIO_ARRIVAL, EventLoop
from servesim.replica.replica import DRAINING, READY, Replica
from servesim.workload.request import Request, RequestState

if TYPE_CHECKING:
    from servesim.cluster.disaggregation import Disaggregator
    from servesim.cluster.kv_store import KVStore
    from servesim.metrics.request_table import RequestTable

DoneCallback = Callable[[Request, float], None]


class Cluster:
    """The replicas, the router, and the bookkeeping of who went where."""

    def __init__(self, replicas: list[Replica], models: list[str], router: Router, loop: EventLoop,
                 on_done: DoneCallback, refresh_interval_s: float = 0.0) -> None:
        self.replicas = replicas
        self.models = models  # model served by each replica
        self.router = router
        self.loop = loop
        self.on_done = on_done  # the run's callback for every request that reaches a terminal state
        self.refresh_interval_s = refresh_interval_s
        self.requests: list[Request] | RequestTable = []  # in order of first arrival (a run's RequestTable)
        self.num_rerouted = 0  # dispatches of requests taken off a replica (crash or scale-down eviction)
        self.reject_reasons: Counter[str] = Counter()
        self._all: list[int] = []
        self._by_model: dict[str, list[int]] = {}
        # replicas taking requests (alive and ready), by model (None: all), made on first use
        # and forgotten whenever a replica's status changes (`Replica.on_status`)
        self._live: dict[str | None, list[int]] = {}
        self._default_model = ""
        # elastic clusters: hold requests while no replica is ready (scale from zero, cold
        # starts) instead of failing them; arrivals counted for autoscalers
        self.hold = False
        self.queue: deque[Request] = deque()
        self.on_drained: Callable[[Replica, float], None] | None = None
        self.num_arrivals = 0
        self.arrived_prompt_tokens = 0
        self.arrived_output_tokens = 0
        self.disagg: Disaggregator | None = None  # the Disaggregator when pools have prefill/decode roles
        self.kv_store: KVStore | None = None  # the KVStore when the scenario enables one
        # called with (replica index, now_s) just before a replica crashes (the disaggregator
        # and the migrator settle the transfers and migrations it takes part in)
        self.crash_hooks: list[Callable[[int, float], None]] = []
        self.lost: set[int] = set()  # replicas crashed for good (a crash without recovery)
        # what a routing decision reads, bound once in one view aimed at each decision (not a
        # view and five closures made at every arrival): replicas as of `_route_s`, its time
        self._route_s = 0.0
        # whether the router's hooks do anything (else: no call that does nothing, per request)
        self._router_dispatch = getattr(type(router), "on_dispatch", None) is not Router.on_dispatch
        self._router_tracks = getattr(type(router), "on_complete", None) is not Router.on_complete
        self._view = ClusterView(0.0, [], self._read_view, self._cached_blocks, self._lora_state, self._outstanding,
                                 partial(outstandings_at, replicas))  # (this list, filled in place)
        self.counts: InFlightCounts | None = None  # the in-flight counts kept between arrivals (`keep_counts`)
        self.sole: Replica | None = None  # the one replica arrivals go to unrouted (`simulation._sole_replica`)

    def index_models(self) -> None:
        """Index the replicas by the model they serve (after `replicas` and `models` are filled)."""
        self._all = list(range(len(self.replicas)))
        for i, m in enumerate(self.models):
            self._by_model.setdefault(m, []).append(i)
        self._default_model = self.models[0]
        self._live.clear()
        for r in self.replicas:
            r.on_status = self._status_changed

    def keep_counts(self) -> None:
        """Keep the replicas' in-flight counts between arrivals (`cluster/counts.py`): only
        where every change to a replica passes through its engine's events, the cluster's
        submissions and status changes (the caller knows)."""
        self.counts = InFlightCounts(self.replicas)
        self._view._outstandings = self.counts.at  # (the view reads them with no layer between)

    def _status_changed(self) -> None:
        """A replica's `alive` or `state` was set."""
        self._live.clear()
        if self.counts is not None:
            self.counts.touch_all()

    @property
    def num_outstanding(self) -> int:
        return sum(r.num_outstanding for r in self.replicas) + len(self.queue)

    # ------------------------------------------------------------------ requests
    def arrive(self, now_s: float, req: Request) -> None:
        """A request reaches the cluster (recorded once, then routed)."""
        self.requests.append(req)
        self.num_arrivals += 1
        self.arrived_prompt_tokens += req.prompt_len
        self.arrived_output_tokens += req.output_len
        if self.sole is not None and not req.model:
            return self.sole.submit(req, now_s)  # (the one replica, live all run: `_dispatch`'s pick)
        self._dispatch(req, now_s)
        if self.sole is not None:
            self.sole.engine.settle()  # (a request ended here never reached the engine)

    def _dispatch(self, req: Request, now_s: float) -> None:
        cands = self._candidates(req)
        if cands is None:
            return self.end(req, now_s, RequestState.REJECTED,
                             f"no pool serves model '{req.model}' (served: {', '.join(sorted(self._by_model))})")
        if not cands:
            if self.hold and not self._gone_for_good(req):
                return self.queue.append(req)  # served, in arrival order, when a replica is ready
            return self.end(req, now_s, RequestState.FAILED, "no live replica")
        if self.disagg is not None:
            return self.disagg.dispatch(req, cands, now_s)
        pick = self.route(self.router, req, cands, now_s)
        if pick is None:
            return self.end(req, now_s, RequestState.REJECTED, f"shed by router {self.router.name}")
        if self._router_dispatch:
            self.router.on_dispatch(req, pick, now_s)
        self.submit(pick, req, now_s)

    def routes_silently(self) -> bool:
        """Whether routing a request does nothing but pick its replica (the router keeps no
        state of its own per dispatch): then a sole replica may take arrivals unrouted."""
        return not self._router_dispatch

    def submit(self, index: int, req: Request, now_s: float) -> None:
        """Hand `req` to replica `index`, after loading from the KV store the part of its
        prefix the replica does not cache (when a store is enabled and the load pays)."""
        delay_s = 0.0
        if self.kv_store is not None and req.hash_ids:
            delay_s = self.kv_store.load(req, index, self.replicas[index].cached_blocks(req))
        if self.counts is not None:  # (its engine may see the request later, through an API server)
            self.counts.touched.add(index)
        self.replicas[index].submit(req, now_s, delay_s)

    def route(self, router: Router, req: Request, cands: list[int], now_s: float) -> int | None:
        """`router`'s pick among `cands` (None: shed)."""
        if len(self.replicas) == 1:
            return cands[0]  # nothing to decide (and nothing to read)
        self._route_s = now_s
        return router.route(req, self._view.aim(now_s, cands))

    def _candidates(self, req: Request) -> list[int] | None:
        """Live replicas serving the request's model (None: no pool serves it at all); read only."""
        key = self._model_key(req)
        idx = self._all if key is None else self._by_model.get(key)
        if idx is None:
            return None
        live = self._live.get(key)
        if live is None:
            replicas = self.replicas
            live = self._live[key] = [i for i in idx if (r := replicas[i]).alive and r.state == READY]  # (`accepting`)
        # shared, not copied per arrival: callers and routers only read it, and a status change
        # makes a new list (the dict is emptied) instead of changing this one
        return live

    def _gone_for_good(self, req: Request) -> bool:
        """Whether every replica that could serve `req` has crashed for good: held, it would
        wait for ever (an elastic cluster holds requests only for replicas that may come)."""
        if not self.lost:
            return False
        key = self._model_key(req)
        return all(i in self.lost for i in (self._all if key is None else self._by_model[key]))

    def _model_key(self, req: Request) -> str | None:
        """The model whose pool serves `req` (None: one model served, every replica serves it)."""
        return (req.model or self._default_model) if len(self._by_model) > 1 or req.model else None

    def _read_view(self, i: int):
        return self.replicas[i].view(self._route_s, self.refresh_interval_s)

    def _outstanding(self, i: int) -> int:
        return self.replicas[i].outstanding_at(self._route_s)

    def _cached_blocks(self, i: int, req: Request) -> int:
        return self.replicas[i].cached_blocks(req)

    def _lora_state(self, i: int, name: str) -> tuple[bool, bool]:
        return self.replicas[i].lora_state(name)

    def end(self, req: Request, now_s: float, state: RequestState, reason: str) -> None:
        """Give `req` a terminal state before it reaches a replica (rejected or failed)."""
        req.state = state
        req.finish_s = now_s
        req.extra["reject_reason" if state == RequestState.REJECTED else "fail_reason"] = reason
        self.reject_reasons[reason.split(" (")[0]] += 1
        self.on_done(req, now_s)

    def replica_done(self, replica: Replica, req: Request, now_s: float) -> None:
        """A replica is done with a request (finished, or rejected by its engine)."""
        replica.num_outstanding -= 1  # (`replica.on_done`, inlined: once per request)
        if self.disagg is not None:
            self.disagg.router_of(replica.index).on_complete(req, replica.index, now_s)
        elif self._router_tracks:
            self.router.on_complete(req, replica.index, now_s)
        self.on_done(req, now_s)
        if self.on_drained:
            self.stop_if_drained(replica, now_s)

    def stop_if_drained(self, replica: Replica, now_s: float) -> None:
        """A draining replica that holds nothing more (its last request finished or migrated
        out) is handed to the scale controller to stop."""
        if self.on_drained and replica.state == DRAINING and replica.empty:
            self.on_drained(replica, now_s)

    # ------------------------------------------------------------------ elastic
    def flush_queue(self, now_s: float) -> None:
        """A replica became ready: dispatch the held requests in arrival order."""
        held, self.queue = self.queue, deque()
        for req in held:
            self._dispatch(req, now_s)

    def redispatch(self, evicted: list[Request], index: int, now_s: float, left: bool = False) -> None:
        """Requests taken off replica `index` (crashed, or evicted when scaling down) are
        routed again and recomputed where they land (`left`: they had already left it, and
        its router knows)."""
        router = self.router if self.disagg is None else self.disagg.router_of(index)
        for req in evicted:
            if not left:
                router.on_complete(req, index, now_s)
            self.num_rerouted += 1
            req.extra["num_reroutes"] = req.extra.get("num_reroutes", 0) + 1
            self._dispatch(req, now_s)

    def fail_queued(self, now_s: float) -> None:
        """End of run: requests still held never found a ready replica."""
        while self.queue:
            self.end(self.queue.popleft(), now_s, RequestState.FAILED, "no ready replica")

    # ------------------------------------------------------------------ failures
    def schedule_crash(self, index: int, at_s: float, recovery_s: float | None, chain: tuple | None = None) -> None:
        """Crash replica `index` at `at_s`; it serves again `recovery_s` later (None: never).
        `chain` = (mtbf_s, rng, active): draw the next random failure after this one while
        `active()` says the run goes on."""
        self.loop.schedule(at_s, self._crash, (index, recovery_s, chain), PRIO_ARRIVAL)

    def random_failures(self, index: int, mtbf_s: float, mttr_s: float, rng: np.random.Generator,
                        active: Callable[[], bool]) -> None:
        """Replica `index` fails after exponential times with mean `mtbf_s` (counted from its
        last recovery) and takes `mttr_s` to come back, for as long as the run goes on."""
        self.schedule_crash(index, float(rng.exponential(mtbf_s)), mttr_s, (mtbf_s, rng, active))

    def _crash(self, now_s: float, payload: tuple) -> None:
        index, recovery_s, chain = payload
        replica = self.replicas[index]
        if chain is not None:
            mtbf_s, rng, active = chain
            if not active():
                return  # the run is over: no more failures
            self.schedule_crash(index, now_s + recovery_s + float(rng.exponential(mtbf_s)), recovery_s, chain)
        if not replica.alive:
            return  # already down: the failure changes nothing
        self.leaving(index, now_s)
        evicted = replica.crash(now_s)
        if recovery_s is not None:
            self.loop.schedule(now_s + recovery_s, self._recover, index, PRIO_ARRIVAL)
        else:
            self.lost.add(index)
            if self.queue:  # (those only lost replicas could serve fail now: `_gone_for_good`)
                self.flush_queue(now_s)
        self.redispatch(evicted, index, now_s)

    def leaving(self, index: int, now_s: float) -> None:
        """Replica `index` is about to lose what it holds (a crash, or an autoscaler stopping it
        at once): the transfers to and from it end (`crash_hooks`: live migrations, P/D KV)."""
        for hook in self.crash_hooks:
            hook(index, now_s)

    def _recover(self, now_s: float, index: int) -> None:
        replica = self.replicas[index]
        replica.recover(now_s)
        if self.queue and replica.state == READY:
            # requests held while no replica was ready (an elastic cluster) go to it now, as
            # they do when a cold start ends
            self.flush_queue(now_s)


def outstandings_at(replicas: list[Replica], t: float, indices) -> list[int]:
    """`replicas[i].outstanding_at(t)` for each index, in one pass (a count-reading router reads
    every candidate at every arrival; this is that method inlined)."""
    out = []
    for i in indices:
        r = replicas[i]
        st = r.engine.stretch
        out.append(r.num_outstanding if st is None else r.num_outstanding - st.finished_by(t))
    return out
