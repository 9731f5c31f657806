"""Mooncake's bursts: several requests with prefix keys arriving at one instant join the stretch
in flight together, and a request whose prefix hits are blocks a running request holds joins too
(`replica/keyed_join.py`); the results are those of stepping, step log included."""

from __future__ import annotations

from pathlib import Path

import pytest

from servesim import load_scenario, simulate
from servesim.replica import fast_forward, keyed_join

from .helpers import assert_same_steps, outcome

MOONCAKE = str(Path(__file__).resolve().parents[2] / "examples" / "mooncake.yaml")
# The trace's arrivals come in bursts (about nine requests every 3 s of trace time); least-requests
# spreads a burst over the replicas, two or three of it arriving at each
BURSTS = ["workload.num_requests=1000", "replicas=8", "router.name=least-requests", "workload.trace.speedup=2"]


def run_both(sets: list[str], monkeypatch) -> tuple:
    """(fast-forwarded, stepped) results and the fast run's counts: keyed joins, joins of two
    requests or more at once, joins with hits on blocks running requests held, and refusals for
    a hit held only by requests that left the stretch."""
    counts = {"joins": 0, "bursts": 0, "shared": 0, "held_by_departed": 0}
    join = fast_forward.keyed_join

    def counted(engine, st, now_s):
        n0, s0 = len(st.reqs), len(st.join_shared or ())
        joined = join(engine, st, now_s)
        if joined:
            counts["joins"] += 1
            counts["bursts"] += len(st.reqs) - n0 > 1
            counts["shared"] += len(st.join_shared or ()) > s0
        return joined

    held_by_departed = keyed_join._Checks._held_by_departed

    def held(self, hits):
        found = held_by_departed(self, hits)
        counts["held_by_departed"] += found
        return found

    monkeypatch.setattr(fast_forward, "keyed_join", counted)
    monkeypatch.setattr(keyed_join._Checks, "_held_by_departed", held)
    fast = simulate(load_scenario(MOONCAKE, sets), keep_steps=True)
    done = dict(counts)
    slow = simulate(load_scenario(MOONCAKE, sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert counts == done  # (stepping joins nothing)
    return fast, slow, done


@pytest.mark.parametrize("extra", [[], ["replicas=4", "workload.trace.speedup=1", "engine.gpu_memory_utilization=0.5"]])
def test_bursts_join_stretches_exactly(extra, monkeypatch):
    """8 replicas (27 bursts of 57 requests joined, 95 joins in all, every one hitting blocks a
    running request holds), and 4 with half the KV cache (the decodes' pops evict cached blocks)."""
    fast, slow, counts = run_both(BURSTS + extra, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert fast.summary()["prefix_cache_hit_rate"] == slow.summary()["prefix_cache_hit_rate"] > 0
    assert counts["bursts"] >= 10, counts  # several arrivals of one instant joined at once
    assert counts["shared"] > 0.5 * counts["joins"], counts  # their first hash blocks held by a running request


def test_lone_arrivals_of_keyed_policies_join_with_shared_hits(monkeypatch):
    """`priority` admits a lone waiting request as vLLM does (bursts stay vLLM's own): its joins
    with hits on held blocks are exact too."""
    sets = BURSTS + ["scheduler.name=priority", "router.name=round-robin", "workload.num_requests=600"]
    fast, slow, counts = run_both(sets, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert counts["bursts"] == 0 and counts["shared"] > 50, counts


def test_a_hit_only_departed_requests_hold_ends_the_stretch(monkeypatch):
    """A next turn hitting its context while only its previous turn, which left the stretch,
    holds those blocks ends the stretch: stepping freed them at that finish and took them back
    from the free queue at the admission. Joining anyway (the check off) logs them in use in the
    steps between, which stepping's log does not."""
    sessions = str(Path(__file__).resolve().parents[2] / "examples" / "sessions.yaml")
    busy = ["workload.num_requests=500", "workload.arrival.rate_per_s=2", "workload.sessions.think_time_s=1"]
    found = []
    held_by_departed = keyed_join._Checks._held_by_departed
    monkeypatch.setattr(keyed_join._Checks, "_held_by_departed",
                        lambda self, hits: found.append(held_by_departed(self, hits)) or False)
    fast = simulate(load_scenario(sessions, busy), keep_steps=True)
    slow = simulate(load_scenario(sessions, busy + ["engine.fast_forward=false"]), keep_steps=True)
    assert sum(found) > 20, sum(found)  # (55 turns whose context only a departed turn held)
    assert outcome(fast) == outcome(slow)  # (the requests' own times do not show it)
    with pytest.raises(AssertionError, match="kv_used_blocks"):
        assert_same_steps(fast, slow)
