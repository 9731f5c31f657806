"""With many replicas on one event loop, fast-forward gives exactly the results of stepping
one by one — for every scheduler, with a router that reads replica state at every arrival —
and it really is used: each replica's stretches run to its own next event."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from servesim import load_scenario, simulate
from servesim.replica.schedulers import available

from .helpers import assert_same_steps, outcome, reads_everything, run  # noqa: F401  (fixture)

# Policies whose fast-forward hook holds for most steps of this overloaded workload (priority
# since a blocked head lets it repeat). The others are exact too, but stop their stretches at
# more events (each policy's share here: docs/scheduling-engine.md, "Speed of the policies").
ROOT = Path(__file__).resolve().parents[2]
MOSTLY_STRETCHES = {"vllm", "vllm-v0", "continuum", "orca", "priority"}


@pytest.mark.parametrize("scheduler", available())
def test_fast_forward_is_exact_with_a_state_reading_router(scheduler, reads_everything):
    sets = [f"router.name={reads_everything}", f"scheduler.name={scheduler}"]
    fast, slow = run(sets), run(sets, fast_forward=False)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert len({r.replica for r in fast.requests}) == 4  # the router spread the load
    assert slow.num_fast_forwarded_steps == 0
    share = fast.num_fast_forwarded_steps / len(fast.steps)
    assert share > (0.9 if scheduler in MOSTLY_STRETCHES else 0.08), share


def test_stale_counts_read_at_a_stretchs_end_are_exact():
    """A stale view taken when a stretch ends (the first change in a refresh interval) reads the
    stretch's steps: with deferred finishes on an open-loop trace it once read the running
    count as of the stretch's start, and routing went another way than stepping's."""
    sets = ["replicas=8", "workload.trace.speedup=14", "workload.trace.end_s=300", "router.name=least-requests",
            "router.count=engine", "router.refresh_interval_s=0.01"]
    path = str(ROOT / "examples/azure-code.yaml")
    fast = simulate(load_scenario(path, sets), keep_steps=True)
    slow = simulate(load_scenario(path, sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert len(fast.requests) > 700 and fast.num_fast_forwarded_steps > 0.5 * len(fast.steps)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)


@pytest.mark.parametrize("refresh", [0.01, 0.1])
def test_stale_views_are_exact_too(refresh, reads_everything):
    sets = [f"router.name={reads_everything}", f"router.refresh_interval_s={refresh}"]
    fast, slow = run(sets), run(sets, fast_forward=False)
    assert outcome(fast) == outcome(slow)
    assert fast.num_fast_forwarded_steps > 0.8 * len(fast.steps)
    live = run([f"router.name={reads_everything}"])
    assert outcome(live) != outcome(fast)  # staleness changes the decisions


PD_POOLS = "pools=[{name: p, role: prefill, replicas: 2}, {name: d, role: decode, replicas: 2, gpus_per_node: 1}]"


@pytest.mark.parametrize("extra", [
    ["disaggregation.first_token=prefill"],
    ["disaggregation.first_token=decode", "network.layerwise_overlap=true"],
    ["disaggregation.conditional=dynamo", "pools=[{name: p, role: prefill}, {name: m}, {name: d, role: decode, replicas: 2}]"],
])
def test_disaggregated_pools_are_exact(extra, reads_everything):
    """Hand-offs, reservations, transfers and arrivals cut stretches as submissions do."""
    sets = ["replicas=1", PD_POOLS, f"router.name={reads_everything}",
            f"disaggregation.decode_router.name={reads_everything}"] + extra
    fast, slow = run(sets), run(sets, fast_forward=False)
    assert outcome(fast) == outcome(slow)
    for a, b in zip(fast.replicas, slow.replicas):
        for col in ("start_s", "end_s", "prefill_tokens", "output_tokens", "num_running", "kv_used_blocks"):
            assert np.array_equal(getattr(a.steps, col), getattr(b.steps, col)), col
    assert fast.summary()["disaggregation"] == slow.summary()["disaggregation"]
    assert fast.summary()["disaggregation"]["num_transfers"] > 100
    assert fast.num_fast_forwarded_steps > 0.2 * len(fast.steps)


@pytest.mark.parametrize("router", ["round-robin", "llumnix"])
def test_live_migration_is_exact(router):
    """Migration picks, checks and removes its request at step boundaries: same results."""
    sets = [f"router.name={router}", "migration.enabled=true", "workload.num_requests=600",
            "workload.arrival.rate_per_s=30"]
    fast, slow = run(sets), run(sets, fast_forward=False)
    assert outcome(fast) == outcome(slow)
    assert fast.summary()["migration"] == slow.summary()["migration"]
    assert fast.summary()["migration"]["num_migrations"] > 10
    assert fast.num_fast_forwarded_steps > 0.5 * len(fast.steps)


@pytest.mark.parametrize("router", ["least-requests", "power-of-two"])
def test_count_reading_routers_are_exact_and_read_the_views_count(router, monkeypatch):
    """Routers reading only in-flight counts ask `ClusterView.outstanding(i)` (or
    `outstandings()`), not a view:
    the same number as the view's at every decision, and results equal to stepping."""
    from servesim.cluster.view import ClusterView

    checked = []
    plain = ClusterView.outstanding

    def outstanding(self, i):
        n = plain(self, i)
        assert n == self._read(i).num_outstanding
        checked.append(n)
        return n

    plain_all = ClusterView.outstandings

    def outstandings(self):
        counts = plain_all(self)
        assert counts == [self._read(i).num_outstanding for i in self.candidates]
        checked.extend(counts)
        return counts

    monkeypatch.setattr(ClusterView, "outstanding", outstanding)
    monkeypatch.setattr(ClusterView, "outstandings", outstandings)
    sets = [f"router.name={router}"]
    fast, slow = run(sets), run(sets, fast_forward=False)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert len(checked) >= 2 * len(fast.requests) and max(checked) > 1
    assert fast.num_fast_forwarded_steps > 0.8 * len(fast.steps)


def test_arrivals_join_numpy_priced_stretches_the_lean_way(monkeypatch):
    """With 8 replicas a stretch is priced arrival gaps ahead by numpy chunks; an arrival that
    cuts it joins at the cut through the one-arrival join (its scalar state rebuilt at the join
    step), not the general one, and is priced on whole from that state (`price_on`); the run is
    stepping's."""
    from servesim.replica import stretch_join
    calls = {"lone": 0, "general": 0}
    lone, general = stretch_join._join_one, stretch_join._join_step_s
    monkeypatch.setattr(stretch_join, "_join_one",
                        lambda *a: calls.__setitem__("lone", calls["lone"] + 1) or lone(*a))
    monkeypatch.setattr(stretch_join, "_join_step_s",
                        lambda *a: calls.__setitem__("general", calls["general"] + 1) or general(*a))
    from servesim.replica.stretch import Stretch
    calls["whole"] = 0  # lean joins priced on whole from their scalar state (`Stretch.price_on`)
    price_on = Stretch.price_on

    def counted_price_on(st, horizon, ahead=0):
        price_on(st, horizon, ahead)
        calls["whole"] += st._priced == st.kmax and st._f is None

    monkeypatch.setattr(Stretch, "price_on", counted_price_on)
    sets = ["replicas=8", "workload.trace.end_s=600", "router.name=least-requests"]
    path = str(ROOT / "examples/cluster-azure-conv.yaml")
    fast = simulate(load_scenario(path, sets), keep_steps=True)
    assert calls["lone"] > 0.25 * len(fast.requests), calls
    assert calls["general"] < 0.02 * calls["lone"], calls  # (only arrivals that join together)
    assert calls["whole"] > 0.9 * calls["lone"], calls
    assert fast.num_fast_forwarded_steps > 0.99 * len(fast.steps)
    slow = simulate(load_scenario(path, sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)


@pytest.mark.parametrize("scheduler", ["vllm", "batchllm"])
def test_busy_replicas_among_many_price_a_few_steps_ahead_of_a_join(scheduler, monkeypatch):
    """Eight replicas at eight times the trace's rate (the matrix's azure-conv cell: each busy,
    a dozen requests a stretch): a lean join with many departures ahead prices at most
    `Engine.join_ahead` steps by the scalar loop (`price_on`'s `ahead`), not a numpy chunk to a
    horizon 160 arrival gaps away; the run is stepping's, and fast-forward covers it."""
    from servesim.replica.engine import JOIN_AHEAD
    from servesim.replica.stretch import Stretch
    calls = {"ahead": 0, "joins": 0, "chunks": 0}
    price_on, chunk = Stretch.price_on, Stretch._chunk

    def counted_price_on(st, horizon, ahead=0):
        calls["joins"] += 1
        k = st.k
        price_on(st, horizon, ahead)
        calls["ahead"] += ahead == JOIN_AHEAD and st._priced == st.k <= k + JOIN_AHEAD < st.kmax

    monkeypatch.setattr(Stretch, "price_on", counted_price_on)
    monkeypatch.setattr(Stretch, "_chunk", lambda st, steps: calls.__setitem__("chunks", calls["chunks"] + 1)
                        or chunk(st, steps))
    sets = ["replicas=8", "workload.trace.speedup=8", "workload.num_requests=600", "router.name=least-requests",
            f"scheduler.name={scheduler}"]
    path = str(ROOT / "examples/azure-conv.yaml")
    fast = simulate(load_scenario(path, sets), keep_steps=True)
    assert calls["ahead"] > 0.5 * calls["joins"] > 0.25 * len(fast.requests), calls
    # (before the steps ahead: about one chunk a join; 64 ahead: 12 %, 32: 28 %, 16: 49 %)
    assert calls["chunks"] < 0.35 * calls["joins"], calls
    assert fast.num_fast_forwarded_steps > 0.99 * len(fast.steps)
    slow = simulate(load_scenario(path, sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)


@pytest.mark.parametrize("scheduler", ["vllm", "batchllm"])
def test_an_uncut_stretch_at_a_busy_replica_among_many_is_extended_a_few_steps_ahead(scheduler, monkeypatch):
    """The same busy replicas: a stretch that reaches the last step a join priced ahead uncut is
    extended by its end event from the scalar state, at most `Engine.join_ahead` steps again
    (`price_on`), not by a numpy chunk to four times its span (hundreds of steps, which the next
    arrival routed here cut a few dozen steps on); the run is stepping's."""
    from servesim.replica.engine import JOIN_AHEAD, Engine
    from servesim.replica.stretch import Stretch
    calls = {"extensions": 0, "ahead": 0, "chunks": 0}
    end, price_on, chunk = Engine._end_fast_forward, Stretch.price_on, Stretch._chunk
    extending = []

    def counted_end(self, now_s, payload):
        st, gen = payload
        extending.append(gen == st.gen and not st.final and st.k < st.kmax and type(st) is Stretch)
        calls["extensions"] += extending[-1]
        try:
            end(self, now_s, payload)
        finally:
            extending.pop()

    def counted_price_on(st, horizon, ahead=0):
        k = st.k
        price_on(st, horizon, ahead)
        calls["ahead"] += bool(extending and extending[-1] and ahead == JOIN_AHEAD and st.k <= k + JOIN_AHEAD)

    def counted_chunk(st, steps):
        calls["chunks"] += bool(extending and extending[-1])
        return chunk(st, steps)

    monkeypatch.setattr(Engine, "_end_fast_forward", counted_end)
    monkeypatch.setattr(Stretch, "price_on", counted_price_on)
    monkeypatch.setattr(Stretch, "_chunk", counted_chunk)
    sets = ["replicas=8", "workload.trace.speedup=8", "workload.num_requests=600", "router.name=least-requests",
            f"scheduler.name={scheduler}"]
    path = str(ROOT / "examples/azure-conv.yaml")
    fast = simulate(load_scenario(path, sets), keep_steps=True)
    # (main priced every one of these by `price`: a chunk of about 400 steps, no `price_on`)
    assert calls["extensions"] > 0.1 * len(fast.requests), calls
    assert calls["ahead"] > 0.8 * calls["extensions"], calls
    assert calls["chunks"] < 0.1 * calls["extensions"], calls
    assert fast.num_fast_forwarded_steps > 0.99 * len(fast.steps)
    slow = simulate(load_scenario(path, sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)


@pytest.mark.parametrize("replicas", [8, 64])
def test_arrivals_at_idle_replicas_start_and_apply_lone_stretches(replicas, monkeypatch):
    """Least-requests sends most arrivals to an idle replica, where the prompt runs alone:
    its step starts by `Engine._start_lone`, its stretch is planned and priced whole by
    `lone_fast_forward` and, nothing having joined it, applied by `_apply_lone`; the run is
    the general path's, stepping one by one."""
    from servesim.replica import engine as engine_module
    from servesim.replica.engine import Engine
    calls = {"start": 0, "apply": 0, "planned": 0}
    start, apply, plan = Engine._start_lone, Engine._apply_lone, engine_module.lone_fast_forward

    def counted_plan(*a):
        planned = plan(*a)
        calls["planned"] += planned is True
        return planned

    def counted_start(self, *a):
        ran = start(self, *a)
        calls["start"] += ran
        return ran

    def counted_apply(self, st):
        calls["apply"] += 1
        return apply(self, st)

    from servesim.metrics.recorder import Recorder
    log_lone = Recorder.log_lone

    def counted_log(self, *a):
        calls["logged"] += 1
        return log_lone(self, *a)

    calls["logged"] = 0
    monkeypatch.setattr(Recorder, "log_lone", counted_log)
    monkeypatch.setattr(Engine, "_start_lone", counted_start)
    monkeypatch.setattr(Engine, "_apply_lone", counted_apply)
    monkeypatch.setattr(engine_module, "lone_fast_forward", counted_plan)
    sets = [f"replicas={replicas}", "workload.trace.end_s=600", "router.name=least-requests"]
    path = str(ROOT / "examples/cluster-azure-conv.yaml")
    fast = simulate(load_scenario(path, sets), keep_steps=True)
    assert calls["start"] > 0.4 * len(fast.requests), calls
    assert calls["apply"] > 0.2 * len(fast.requests), calls
    assert calls["planned"] > 0.9 * calls["start"], calls  # (the lone starts' stretches, planned the lean way)
    assert calls["logged"] == calls["apply"], calls  # (each applied stretch's steps logged by `log_lone`)
    assert fast.num_fast_forwarded_steps > 0.99 * len(fast.steps)
    monkeypatch.setattr(Engine, "_start_lone", lambda *a: False)  # stepping by the general path only
    slow = simulate(load_scenario(path, sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)


@pytest.mark.parametrize("example,sets", [
    ("cluster-azure-conv.yaml", ["replicas=8", "workload.trace.end_s=600", "router.name=least-requests"]),
    # (crashes re-submit several requests in one event: starting a step in the first one's
    # submission, as lone14 did, changes 34 requests of this whole run)
    ("cluster-faults.yaml", []),
])
def test_idle_replicas_start_without_a_heap_entry(example, sets, monkeypatch):
    """An idle replica's start after an arrival is held out of the event heap
    (`EventLoop.schedule_soon`): nearly every start of the 8-replica run never enters it, and
    the run, crashes' re-submissions included, is the one where every start is a heap entry."""
    from servesim.core.loop import EventLoop
    from servesim.replica.engine import Engine
    calls = {"starts": 0, "pushed": 0}
    on_start, schedule = Engine._on_start, EventLoop.schedule

    def counted_start(self, *a):
        calls["starts"] += 1
        return on_start(self, *a)

    def counted_schedule(self, time_s, handler, *a):
        calls["pushed"] += getattr(handler, "__name__", "") == "counted_start"
        return schedule(self, time_s, handler, *a)

    monkeypatch.setattr(Engine, "_on_start", counted_start)
    monkeypatch.setattr(EventLoop, "schedule", counted_schedule)
    path = str(ROOT / "examples" / example)
    held = simulate(load_scenario(path, sets), keep_steps=True)
    if example == "cluster-azure-conv.yaml":
        assert calls["starts"] > 0.4 * len(held.requests), calls
        assert calls["pushed"] < 0.01 * calls["starts"], calls
    monkeypatch.setattr(EventLoop, "schedule_soon", lambda self, t, h, p=None, prio=0: self.schedule(t, h, p, prio))
    pushed = simulate(load_scenario(path, sets), keep_steps=True)
    assert outcome(held) == outcome(pushed)
    assert_same_steps(held, pushed)
    assert held.num_events == pushed.num_events


@pytest.mark.parametrize("scheduler", ["vllm-v0", "sglang"])
@pytest.mark.parametrize("rate", [10, 40])
def test_prompt_only_joins_are_exact_with_a_state_reading_router(scheduler, rate, reads_everything, monkeypatch):
    """A prefill-first policy's arrivals join stretches as prompt-only steps (`Stretch.stall`):
    a router reading every view field (running, waiting, KV blocks, tokens outstanding) while
    stretches hold stalls routes as with stepping, and the runs are the same."""
    from servesim.replica import stretch_join
    calls = []
    stall = stretch_join._stall_join
    monkeypatch.setattr(stretch_join, "_stall_join", lambda *a: stall(*a) and not calls.append(1))
    sets = [f"router.name={reads_everything}", f"scheduler.name={scheduler}", f"workload.arrival.rate_per_s={rate}"]
    fast, slow = run(sets), run(sets, fast_forward=False)
    # (at 40 requests per second the 4 replicas queue: fewer arrivals find a stretch to join)
    assert len(calls) > (0.5 if rate == 10 else 0.05) * len(fast.requests), len(calls)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)


def test_prompt_only_joins_at_eight_replicas_are_exact(monkeypatch):
    """The azure-conv trace at 8 replicas (least-requests): most arrivals at a busy replica join
    its stretch as a prompt-only step (priced ahead by numpy chunks, cut there), and the run is
    stepping's."""
    from servesim.replica import stretch_join
    calls = []
    stall = stretch_join._stall_join
    monkeypatch.setattr(stretch_join, "_stall_join", lambda *a: stall(*a) and not calls.append(1))
    sets = ["replicas=8", "workload.trace.end_s=600", "router.name=least-requests", "scheduler.name=vllm-v0"]
    path = str(ROOT / "examples/cluster-azure-conv.yaml")
    fast = simulate(load_scenario(path, sets), keep_steps=True)
    assert len(calls) > 0.25 * len(fast.requests), len(calls)
    assert fast.num_fast_forwarded_steps > 0.99 * len(fast.steps)
    slow = simulate(load_scenario(path, sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
