"""Replica failures: nothing is lost, re-routed requests recompute, and with no replica left
requests fail; results stay exact with fast-forward."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from servesim import load_scenario, simulate
from servesim.replica.replica import Replica
from servesim.workload.request import RequestState

from .helpers import SESSIONS, outcome, run

CRASH = ["router.name=round-robin", "faults.crashes=[{replica: 1, at_s: 4.0, recovery_s: 5.0}]"]


def test_a_crash_loses_nothing_and_rerouted_requests_recompute():
    res = run(CRASH)
    states = [r.state for r in res.requests]
    assert states.count(RequestState.FINISHED) == len(states) == 400
    moved = [r for r in res.requests if r.moves]
    assert moved and res.cluster["num_rerouted"] == len(moved)
    assert all(r.moves[0][1] == 1 and r.replica != 1 for r in moved)  # off the crashed replica
    summary = res.summary()
    assert summary["cluster"]["per_replica"][1]["num_crashes"] == 1
    assert summary["cluster"]["per_replica"][1]["down_s"] == 5.0
    # Requests that had a first token keep it; the others wait for the recompute on another
    # replica, so their TTFT is far above that of requests never touched by the crash.
    late = [r.first_token_s - r.arrival_s for r in moved if r.first_token_s > 4.0]
    others = [r.first_token_s - r.arrival_s for r in res.requests if not r.moves and r.arrival_s < 4.0]
    assert late and np.mean(late) > 2 * np.mean(others)
    # the crashed replica serves again after its recovery, and nothing before
    back = [r for r in res.requests if r.replica == 1 and not r.moves]
    assert all(r.arrival_s < 4.0 or r.arrival_s >= 9.0 for r in back)
    assert any(r.arrival_s >= 9.0 for r in back)


def test_crash_results_are_exact_with_fast_forward():
    assert outcome(run(CRASH)) == outcome(run(CRASH, fast_forward=False))


def test_with_no_replica_left_requests_fail():
    crashes = ", ".join(f"{{replica: {i}, at_s: 3.0, recovery_s: null}}" for i in range(4))
    res = run([f"faults.crashes=[{crashes}]"])
    failed = [r for r in res.requests if r.state == RequestState.FAILED]
    done = [r for r in res.requests if r.state == RequestState.FINISHED]
    assert len(failed) + len(done) == 400 and failed and done
    assert all(r.finish_s >= 3.0 for r in failed) and all(r.finish_s < 3.0 for r in done)
    assert res.summary()["num_failed"] == len(failed)


def test_random_failures_from_mtbf_are_reproducible():
    sets = ["pools=[{name: a, replicas: 4, mtbf_s: 5.0, mttr_s: 2.0}]", "replicas=1"]
    a, b = run(sets), run(sets)
    assert outcome(a) == outcome(b)
    crashes = sum(r.num_crashes for r in a.replicas)
    assert crashes >= 4
    assert all(r.state == RequestState.FINISHED for r in a.requests)


@pytest.mark.parametrize("scheduler", ["vtc", "sglang"])
def test_a_recovered_replicas_policy_counts_the_engines_steps_on(scheduler, monkeypatch):
    # A replica back from a crash gets a fresh scheduler whose step count goes on from its
    # engine's (`Scheduler.resume_at`), as the step log's does: vtc counts decode steps, and
    # sglang decays its new-token ratio, by the steps since a mark its decision set, so a
    # count from 0 read every step of the replica's earlier lives as passed at its first step
    # (vtc then admitted at once where it waits `max_wait_tokens` steps; stepping and
    # fast-forward disagreed after a recovery)
    seen = []
    recover = Replica.recover

    def checked(self, now_s):
        recover(self, now_s)
        seen.append(self.engine.scheduler.num_engine_steps == self.engine.num_steps > 0)

    monkeypatch.setattr(Replica, "recover", checked)
    sets = [f"scheduler.name={scheduler}", "pools=[{name: a, replicas: 3, mtbf_s: 4.0, mttr_s: 1.0}]", "replicas=1"]
    fast, slow = run(sets), run(sets, fast_forward=False)
    assert outcome(fast) == outcome(slow)
    assert len(seen) >= 6 and all(seen), seen


def test_andes_crashes_inside_a_stretch():
    # A crash settles the stretch in flight without telling the policy its step ends; Andes's
    # drain settled its stale last-token notes from those ends (a KeyError). Its drained
    # requests leave it for good, so the drain no longer settles them
    sets = ["scheduler.name=andes", "workload.num_requests=400", "workload.arrival.rate_per_s=2",
            "pools=[{name: a, replicas: 3, mtbf_s: 60, mttr_s: 10}]"]
    fast = simulate(load_scenario(SESSIONS, sets), keep_steps=True)
    slow = simulate(load_scenario(SESSIONS, sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert outcome(fast) == outcome(slow)
    assert sum(r.num_crashes for r in fast.replicas) >= 3
    assert fast.num_fast_forwarded_steps > 0.9 * len(fast.steps)


def test_a_rerouted_request_cuts_a_fastswitch_chunk_stretch():
    # FastSwitch walks one tenant's requests in arrival order: a request re-routed after a crash
    # arrived before the prompt whose chunks spend a stretch's budget, so it is walked first
    # and takes budget from that chunk (`chunk_keeps_arrival`: the stretch had kept it queued)
    path = str(Path(SESSIONS).with_name("mooncake.yaml"))
    sets = ["scheduler.name=fastswitch", "workload.num_requests=300", "workload.trace.speedup=1", "router.name=mooncake",
            "pools=[{name: a, replicas: 2, mtbf_s: 60, mttr_s: 10}]"]
    fast = simulate(load_scenario(path, sets), keep_steps=True)
    slow = simulate(load_scenario(path, sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert outcome(fast) == outcome(slow)
    assert sum(r.num_crashes for r in fast.replicas) >= 4 and fast.cluster["num_rerouted"] >= 20
