"""A waiting request with prefix keys joins an SGLang stretch of keyed requests as a prompt-only
step (`replica/radix_join.py`): its radix-tree match, lock, take and insert made at the join, the
decodes' takes before it (and what they evict) made first. Fast-forwarded runs where turns join
that way give exactly stepping's run (every request, every step of the log), and the joins
really happen, with prefix hits and with evictions before them."""

from __future__ import annotations

from pathlib import Path

import pytest

from servesim import load_scenario, simulate
from servesim.replica import stretch_join
from servesim.replica.radix_cache import RadixKVCache
from tests.cluster.helpers import assert_same_steps, outcome

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# Busy conversations: next turns arrive while stretches holding other conversations' turns run
BUSY = ["scheduler.name=sglang", "workload.num_requests=300", "workload.arrival.rate_per_s=2",
        "workload.sessions.think_time_s=1"]


@pytest.fixture
def joins(monkeypatch):
    """The keyed stall joins of the runs that follow: for each, (the joiner's cached tokens, the
    blocks the decodes' takes before it evicted)."""
    made = []
    join = stretch_join.keyed_stall_join
    evicted = []
    take = RadixKVCache._take

    def counted_take(self, n):
        evicted.append(max(n - self._truly_free, 0))
        return take(self, n)

    def counted(engine, st, now_s):
        evicted.clear()
        engine.kv._take = counted_take.__get__(engine.kv)  # (the take before the join is the first)
        try:
            joined = join(engine, st, now_s)
        finally:
            del engine.kv._take
        if joined:
            made.append((st.reqs[-1].num_computed_tokens, evicted[0] if evicted else 0))
        return joined

    monkeypatch.setattr(stretch_join, "keyed_stall_join", counted)
    return made


def both(path: Path, sets: list[str], joins: list) -> tuple:
    fast = simulate(load_scenario(str(path), sets), keep_steps=True)
    n = len(joins)
    slow = simulate(load_scenario(str(path), sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert len(joins) == n  # (stepping joins nothing)
    return fast, slow


@pytest.mark.parametrize("extra", [[], ["replicas=2", "router.name=least-requests", "workload.arrival.rate_per_s=4"]])
def test_next_turns_join_sglang_stretches_exactly(extra, joins):
    fast, slow = both(EXAMPLES / "sessions.yaml", BUSY + extra, joins)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert [r.num_computed_tokens for r in fast.requests] == [r.num_computed_tokens for r in slow.requests]
    assert fast.prefix_hits == slow.prefix_hits
    # most turns joined a stretch in flight, many with their conversation's context cached
    assert len(joins) > 0.4 * len(fast.requests), len(joins)
    assert sum(1 for cached, _ in joins if cached) > 0.2 * len(fast.requests)
    assert fast.num_fast_forwarded_steps > slow.num_fast_forwarded_steps == 0


def test_joins_after_evictions_stay_exact(joins):
    # half the memory: the tree is full, and the decodes' takes before a join evict its oldest
    # leaves (made at the join, as stepping makes them before that step): 209 joins of 300
    # turns, 132 of them after evictions
    sets = ["scheduler.name=sglang", "workload.num_requests=300", "engine.gpu_memory_utilization=0.5"]
    fast, slow = both(EXAMPLES / "sessions.yaml", sets, joins)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert fast.prefix_hits == slow.prefix_hits
    assert len(joins) > 0.5 * len(fast.requests), len(joins)
    assert sum(1 for _, evicted in joins if evicted) > 0.3 * len(fast.requests)


def test_mooncake_stays_exact(joins):
    # long prompts, chunked, behind a queue: few joins, every step as stepping's
    sets = ["scheduler.name=sglang", "workload.num_requests=150", "workload.trace.speedup=0.25"]
    fast, slow = both(EXAMPLES / "mooncake.yaml", sets, joins)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
