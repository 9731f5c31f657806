"""Wires a Scenario into components and runs the event loop (the only module that knows every stage)."""

from __future__ import annotations

import gc
import tempfile
import time
from functools import partial
from itertools import chain
from operator import attrgetter
from pathlib import Path
from typing import Callable

import numpy as np

from servesim.cluster.build import PoolSpec, resolve_pools
from servesim.cluster.cluster import Cluster
from servesim.cluster.routers import Router, get_router
from servesim.cluster.polca import PowerManager, check_power
from servesim.cluster.setup import build_disaggregator, build_kv_store, build_migrator
from servesim.cluster.scaling import scaled_pools, start_controllers
from servesim.core.allocator import keep_freed_memory
from servesim.core.loop import EventLoop
from servesim.errors import InputError
from servesim.metrics.disaggregation import migration_section
from servesim.invariants import check_invariants
from servesim.metrics.elastic import elastic_info
from servesim.metrics.recorder import Recorder
from servesim.metrics.request_table import RequestTable
from servesim.metrics.series_parts import HeldBytes
from servesim.metrics.step_helper import ReducerHelper, helper_wanted
from servesim.metrics.step_reduce import StepReducer
from servesim.replica.engine import Engine
from servesim.replica.frontend import FrontEnd, FrontendConfig
from servesim.replica.keyed_admission import admits_keyed
from servesim.replica.kv_cache import KVCacheManager
from servesim.replica.replica import STOPPED, Replica
from servesim.result import Result, assemble_result, close_table, reduced_ends
from servesim.scenario import Scenario
from servesim.workload import build_workload
from servesim.workload.feed import Feed, Progress
from servesim.workload.request import Request

__all__ = ["Result", "simulate"]  # Result lives in servesim.result; importable from here as before


def simulate(scenario: Scenario, progress: Progress | None = None, *, keep_requests: bool = True,
             keep_steps: bool = False) -> Result:
    """Run one scenario to completion (or to `max_sim_time_s`) and check the invariants.

    Every request is reduced to a row of `result.table` when it ends. `keep_requests=False`
    also lets the Request object go then and spills the rows to a temporary file in chunks, so
    memory does not grow with finished requests (the CLI runs so); True keeps the objects for
    `result.requests` (tests, notebooks) and the rows in memory. The step logs are reduced as
    they come (memory does not grow with the steps; step end times are in files deleted with
    the result); `keep_steps=True` also keeps every step in `result.steps` (tests and tools that
    look at single steps), as do runs whose power, scaling or disaggregation sections read every
    step. Scratch files live in `result.spill`, deleted with the result or when the run fails."""
    keep_freed_memory()  # (numpy's chunk-sized arrays reuse the pages the last ones freed: core/allocator.py)
    # What exists before the run (modules, the scenario, the caller's objects) outlives it: frozen,
    # the cyclic collector does not scan it. A fresh process owes a full collection after its
    # imports (about 45,000 objects: 15 ms, a sixth of a 200-request run), which would otherwise
    # fall in the run's set-up. The run allocates many long-lived small objects (token runs, step
    # lists) and little garbage, so the collector is paused while it runs and collects once at the
    # end: that scans only what the run allocated (the rest is frozen) and frees the run's own
    # reference cycles (the cluster, its replicas, their callbacks and whatever hangs off them:
    # engines, KV arrays, requests). Left for a later full collection, those cycles would go to
    # the oldest generation uncounted, which the collector's rule for full collections (a quarter
    # more objects there than after the last one) does not see: a process running many
    # simulations (validate, plan, compare) grew by about a run's memory per run.
    gc.freeze()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _run(scenario, progress, keep_requests, keep_steps)
    finally:
        if gc_was_enabled:
            gc.enable()
            gc.collect()
        gc.unfreeze()


def check_inputs(scenario: Scenario) -> None:
    """The checks of the scenario `simulate` makes before its first event (the catalogue's
    models, GPUs and engines, parallelism, memory, power limits), raising InputError as it
    would: a sweep checks every variant so before running any."""
    pools = resolve_pools(scenario)
    if scenario.power is not None:
        check_power(scenario.power, pools)


def _run(scenario: Scenario, progress: Progress | None, keep_requests: bool, keep_steps: bool) -> Result:
    pools = resolve_pools(scenario)
    disagg = any(p.role != "mixed" for p in pools)
    # elastic/power and disaggregation summaries read every step's times and prompt tokens
    # (prefill or decode power, busy time): kept as `StepTimes` where the whole log is not
    keep_times = scenario.autoscaler is not None or scenario.power is not None or disagg
    spill = None if keep_steps and keep_requests else tempfile.TemporaryDirectory(prefix="servesim-run-")
    try:
        return _simulate(scenario, progress, pools, keep_requests, keep_steps, spill, keep_times, disagg)
    except BaseException:
        if spill is not None:
            spill.cleanup()
        raise
    finally:
        for pool in pools:  # (its turns' built keys, hundreds each, which the collection after the run would walk)
            pool.recent_keys.clear()


def _simulate(scenario: Scenario, progress: Progress | None, pools: list[PoolSpec], keep_requests: bool,
              keep_steps: bool, spill: tempfile.TemporaryDirectory | None, keep_times: bool, disagg: bool) -> Result:
    wall0 = time.perf_counter()
    root = np.random.SeedSequence(scenario.seed)
    workload_seed, policy_seed = root.spawn(2)
    router_seed, fault_seed = root.spawn(2)  # (spawned after, so one replica draws as it always did)
    loop = EventLoop()
    workload = build_workload(scenario.workload, workload_seed)
    feed = Feed(workload, loop, progress)
    until_s = scenario.max_sim_time_s or float("inf")
    n = sum(p.replicas for p in pools)
    auto = scenario.autoscaler
    scaled = scaled_pools(auto, pools)  # (pool, spares): the spares stay stopped until scaled up
    n += sum(extra for _, extra in scaled)
    router = get_router(scenario.router.name)(scenario.router.params(), n, np.random.default_rng(router_seed))
    migrate = scenario.migration.enabled
    defer = _defers_finishes(router, n, auto is not None or disagg or migrate)
    table = RequestTable(keep_requests, folder=None if keep_requests else spill.name)

    def on_done(req: Request, now_s: float) -> None:
        feed.on_done(req, now_s)
        table.done(req)  # reduced to its row, and released unless kept

    cluster = Cluster([], [], router, loop, on_done, scenario.router.refresh_interval_s)
    cluster.requests = table  # the cluster registers each request once, on first arrival
    seeds = [policy_seed, *policy_seed.spawn(n - 1)]
    keeps = keep_steps or keep_times  # (each replica's recorder keeps its steps, whole or their times)
    for pool in pools:
        for _ in range(pool.replicas):
            _add_replica(cluster, pool, until_s, defer, seeds, feed, n, scenario.frontend, keeps)
    for pool, extra in scaled:  # after every pool, so fixed replicas keep their indices
        for _ in range(extra):
            _add_replica(cluster, pool, until_s, defer, seeds, feed, n, scenario.frontend, keeps).set_state(0.0, STOPPED)
    helper = _start_reducers(cluster, scenario.output.timeseries_interval_s, None if keep_steps else spill)
    if helper is not None:
        _stream_gaps(helper, cluster, table)
    cluster.index_models()
    if scenario.kv_store.enabled:
        cluster.kv_store = build_kv_store(scenario, pools, cluster)
    router.bind(cluster.replicas, cluster.kv_store)
    feed.deliver = cluster.arrive
    active = lambda: feed.pending() or cluster.num_outstanding > 0  # noqa: E731  (the run goes on)
    if disagg:
        cluster.disagg = build_disaggregator(scenario, pools, cluster, n, root.spawn(1)[0])
    _key_flags(cluster, pools, not (cluster.kv_store is not None or disagg or migrate or auto or scenario.faults.crashes
                                    or any(p.mtbf_s for p in pools)))
    _schedule_faults(scenario, pools, cluster, fault_seed, active)
    migrator = build_migrator(scenario, pools, cluster, active) if migrate else None
    controllers = start_controllers(auto, scaled, pools, cluster, loop, active, migrator and migrator.drain)
    power = _start_power(scenario, pools, cluster, loop, active)
    if n > 1 and not (disagg or migrate or auto or power is not None or cluster.kv_store is not None):
        cluster.keep_counts()  # (every change to a replica is then one of its events, a submission or a status change)
    if (len(cluster.replicas) == 1 and not (disagg or migrate or auto or cluster.hold)
            and power is None and cluster.kv_store is None and not scenario.faults.crashes and not pools[0].mtbf_s):
        _sole_replica(cluster, feed)
    feed.start()
    try:
        loop.run(until_s=until_s)
        _end_run(cluster, loop.now_s, table, helper, keep_steps)
    except BaseException:
        if helper:
            helper.stop()
        raise
    if not cluster.requests:
        raise InputError(_no_requests(scenario))
    if progress:
        progress(feed.num_done, workload.expected_num_requests, loop.now_s)
    result = assemble_result(scenario, pools, cluster, table, loop, getattr(workload, "skipped_rows", 0),
                     time.perf_counter() - wall0, spill, keep_steps, keep_times)
    _add_control_sections(result, scenario, pools, cluster, controllers, power, migrator)
    result.itl = helper.itl if helper else None
    check_invariants(result, [r.engine.kv for r in cluster.replicas])
    return result


def _defers_finishes(router: Router, n: int, reacts: bool) -> bool:
    """May finishes be processed late inside a stretch? Only if nothing reacts to them at once
    but a closed-loop workload's follow-ups (told at the finish's time: `Feed.notice`): no
    router that tracks completions itself, no autoscaler (a draining replica stops at its last
    finish), no prefill/decode pools or migration (`reacts`: a decode replica's finish may let a
    reservation through at once). (A KV store's writes at each finish are told at their times
    too: `build_kv_store`.)"""
    return not reacts and (n == 1 or type(router).on_complete is Router.on_complete)


def _stream_gaps(helper: ReducerHelper, cluster: Cluster, table: RequestTable) -> None:
    """With several replicas the helper reduces the inter-token gaps too, as requests end: it
    moves the after-run join to the second core. With one it would cost more CPU (the runs'
    trips down the pipe) than the join it saves, so that replica's gaps are joined after the
    run, by the helper from the spilled files (`join_gaps`) while this process summarises."""
    if len(cluster.replicas) > 1:
        table.itl_sink = helper
        table.logged = lambda: [r.engine.recorder.num_steps for r in cluster.replicas]
    else:
        helper.stream_itl = False


def _start_power(scenario: Scenario, pools: list[PoolSpec], cluster: Cluster, loop: EventLoop,
                 active: Callable[[], bool]) -> PowerManager | None:
    """The power manager of the scenario's `power` section, started (None without one)."""
    if scenario.power is None:
        return None
    power = PowerManager(scenario.power, scenario.perf, pools, cluster, loop, active)
    power.start()
    return power


def _key_flags(cluster: Cluster, pools: list[PoolSpec], shared_only: bool) -> None:
    """Set how each replica's engine keys its requests' prefixes. Requests with prefix keys join
    stretches in flight unless something reads the replicas' prefix caches from outside
    (`PoolSpec.cache_read_outside`, `replica/keyed_join.py`). Keys only for the hash ids other
    requests may share (`shared_only`) where nothing but the replica's own vLLM cache keeps KV by
    them (`Engine.shared_keys_only`; a policy that may swap keys every id of a request from its
    first preemption on: `Scheduler.key_every_id`). Among several replicas, a request finishing
    inside a stretch offers its built keys to its next turn (`RecentKeys.offer`)."""
    keyed_joins = not any(p.cache_read_outside for p in pools)
    for r in cluster.replicas:
        engine, sched = r.engine, r.engine.scheduler
        engine.keyed_joins = keyed_joins and admits_keyed(engine)
        engine.cache_read_outside = not keyed_joins
        engine.shared_keys_only = shared_only and type(engine.kv) is KVCacheManager and not sched.sorts_by_keys
        if type(engine.kv) is KVCacheManager:
            engine.kv.offers_keys = len(cluster.replicas) > 1


def _end_run(cluster: Cluster, now_s: float, table: RequestTable, helper, keep_steps: bool) -> None:
    """After the loop: every request still held given its terminal state, the recorders and the
    request table closed, the step reducers' results handed to the recorders."""
    cluster.fail_queued(now_s)
    for r in cluster.replicas:
        r.engine.drain(now_s)
        r.engine.recorder.finish()
    table.stream_end()
    if helper:
        helper.end()  # (the helper reduces its last buffers while the table closes)
    close_table(table, cluster)
    for r, reducer in zip(cluster.replicas, helper.finish() if helper else []):
        r.engine.recorder.reducer = reducer
    if helper:  # gaps not streamed: joined in the helper (step ends from its files), beside the summary
        helper.join_gaps(None if keep_steps else table.run_reader(),
                         None if keep_steps else reduced_ends(helper.reducers))


def _sole_replica(cluster: Cluster, feed: Feed) -> None:
    """One replica, live all run, behind a router that keeps no state: the cluster hands it
    requests without routing them. If nothing but the feed's stream arrivals reach it, each on
    its own (no closed loop, API server, finish notices or KV ports), its stretches priced to the
    next arrival also go without an end event (`Engine.sole_arrival`)."""
    if not cluster.routes_silently():
        return
    replica = cluster.replicas[0]
    cluster.sole = replica
    engine = replica.engine
    if (not feed.closed_loop and replica.frontend is None and engine.deliver is None and engine.notice is None
            and engine.ports is None and engine.on_event is None and engine.on_change is None):
        engine.sole_arrival = feed.arrive_from_stream


def _add_control_sections(result: Result, scenario: Scenario, pools: list[PoolSpec], cluster: Cluster,
                          controllers: list, power: PowerManager | None, migrator) -> None:
    """What the autoscaler, power manager, migrator and KV store did, into `result`."""
    if controllers:  # (every pool's decisions, by time; a tick's in the order of the pools named)
        result.scale_events = sorted(chain.from_iterable(c.events for c in controllers), key=attrgetter("time_s"))
    if controllers or power is not None:
        result.elastic = elastic_info(scenario, pools, cluster.replicas, controllers, power)
    if migrator is not None:
        result.migration = migration_section(migrator.migrations)
    if cluster.kv_store is not None:
        result.kv_store = cluster.kv_store.section()


def _no_requests(scenario: Scenario) -> str:
    w = scenario.workload
    limits = f"workload.duration_s {w.duration_s}, max_sim_time_s {scenario.max_sim_time_s}"
    if w.trace is not None:
        return (f"no request to simulate: trace '{w.trace.name}' has no rows in the replayed slice "
                f"(trace.start_s {w.trace.start_s:g}, trace.end_s {w.trace.end_s}, {limits})")
    return f"no request to simulate: none arrives before the run ends ({limits})"


def _add_replica(cluster: Cluster, pool: PoolSpec, until_s: float, defer: bool, seeds: list, feed: Feed,
                 n: int, frontend: FrontendConfig, keep_steps: bool) -> Replica:
    """Build the next replica of `pool` and add it to the cluster."""
    index = len(cluster.replicas)
    scheduler, kv = pool.make_parts()
    # With n replicas a stretch is priced ~20n arrival gaps ahead (one replica: exactly one): an
    # arrival elsewhere does not touch it, and each time it reaches that horizon uncut an event
    # extends it (8 replicas, Azure trace: 4,984 extensions with 3n, 1,030 with 20n).
    # An API server that streams tokens at a cost sees every step's tokens: this engine steps one by one.
    streams = frontend.token_s() > 0
    config = pool.config.model_copy(update={"fast_forward": False}) if streams else pool.config
    last = cluster.replicas[-1].engine if cluster.replicas else None  # (its memo shared for the same perf model)
    engine = Engine(config, scheduler, kv, pool.perf, cluster.loop, Recorder(keep_steps), None, until_s=until_s,
                    rng=np.random.default_rng(seeds[index]), defer_finishes=defer,
                    next_event_s=feed.next_arrival_s, lookahead=1 if n == 1 else 20 * n,
                    notice=feed.notice if feed.closed_loop else None, decode_fns=last and last.decode_fns)
    # The front end's own stream only when it draws (time_cv > 0): other runs stay byte-identical.
    fe_rng = np.random.default_rng(seeds[index].spawn(1)[0]) if frontend.time_cv > 0 else None
    replica = Replica(index, pool.name, engine, pool.make_parts, FrontEnd(frontend, fe_rng) if frontend.active else None)
    engine.on_done = partial(cluster.replica_done, replica)  # (a C call per request's end, not a closure's frame)
    if streams:
        engine.deliver = lambda now_s, tokens: replica.frontend.deliver_s(now_s, tokens)
    if cluster.refresh_interval_s > 0:
        interval = cluster.refresh_interval_s
        engine.on_change = lambda now_s: replica.before_change(now_s, interval)
    cluster.replicas.append(replica)
    cluster.models.append(pool.model)
    return replica


def _start_reducers(cluster: Cluster, interval_s: float, spill: tempfile.TemporaryDirectory | None
                    ) -> ReducerHelper | None:
    """Every replica's steps reduced as they come, in a helper process when a second core is
    there (metrics/step_helper.py; returned, None: here); KV usage in the time series is a
    share of all replicas' blocks; step end times go to files in `spill` (None: kept in the logs)."""
    total = sum(r.engine.kv.num_gpu_blocks for r in cluster.replicas)
    held = HeldBytes()  # (what all of them hold before files: series_parts.py)
    reducers = [StepReducer(interval_s, total, None if spill is None else Path(spill.name) / f"ends-{r.index}.f8",
                            held) for r in cluster.replicas]
    helper = ReducerHelper(reducers, spill and spill.name) if helper_wanted() else None
    for i, (r, reducer) in enumerate(zip(cluster.replicas, reducers)):
        r.engine.recorder.start(reducer, helper, i)
    return helper


def _schedule_faults(scenario: Scenario, pools: list[PoolSpec], cluster: Cluster, seed: np.random.SeedSequence,
                     active) -> None:
    for c in scenario.faults.crashes:
        cluster.schedule_crash(c.replica, c.at_s, c.recovery_s)
    index = 0
    for pool in pools:
        for _ in range(pool.replicas):
            if pool.mtbf_s:
                rng = np.random.default_rng(seed.spawn(1)[0])
                cluster.random_failures(index, pool.mtbf_s, pool.mttr_s, rng, active)
            index += 1
