"""A conversation's next turn whose previous turn left the stretch in flight: the stretch's
departed requests are settled (`replica/departed_settle.py`: their decode blocks, their
registrations and their frees, in finish order) and the turn joins with its context cached,
and the results are those of stepping, step log included."""

from __future__ import annotations

from pathlib import Path

import pytest

from servesim import load_scenario, simulate
from servesim.replica import fast_forward, keyed_join

from .helpers import assert_same_steps, outcome

SESSIONS = str(Path(__file__).resolve().parents[2] / "examples" / "sessions.yaml")
# Busy conversations whose next turns come a fraction of a second after the previous answer:
# the previous turn usually finished inside the stretch the next one arrives in
QUICK = ["workload.num_requests=400", "workload.arrival.rate_per_s=2", "workload.sessions.think_time_s=0.3"]


def run_both(sets: list[str], monkeypatch) -> tuple:
    """(fast-forwarded, stepped) results; the settles of the fast run (how many requests each
    settled) and the cached tokens of each turn that joined right after one."""
    settles, joined_after = [], []
    settle = keyed_join.settle_departed
    join = fast_forward.keyed_join

    def counted_settle(engine, st, s):
        n = len(st.settled or ())
        done = settle(engine, st, s)
        if done:
            settles.append(len(st.settled) - n)
        return done

    def counted_join(engine, st, now_s):
        n = len(settles)
        joined = join(engine, st, now_s)
        if joined and len(settles) > n:
            joined_after.append(st.reqs[-1].num_computed_tokens)  # (its cached tokens, just admitted)
        return joined

    monkeypatch.setattr(keyed_join, "settle_departed", counted_settle)
    monkeypatch.setattr(fast_forward, "keyed_join", counted_join)
    fast = simulate(load_scenario(SESSIONS, sets), keep_steps=True)
    slow = simulate(load_scenario(SESSIONS, sets + ["engine.fast_forward=false"]), keep_steps=True)
    return fast, slow, settles, joined_after


@pytest.mark.parametrize("scheduler", ["vllm", "priority"])
def test_turns_join_after_their_previous_turn_is_settled(scheduler, monkeypatch):
    fast, slow, settles, joined_after = run_both(QUICK + [f"scheduler.name={scheduler}"], monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    # (vllm: 56 settles of 1 to 4 requests, 54 turns joining right after, all with their context)
    assert len(settles) > 0.1 * len(fast.requests), len(settles)
    assert len(joined_after) > 0.8 * len(settles), (len(joined_after), len(settles))
    assert sum(c > 0 for c in joined_after) > 0.8 * len(joined_after), joined_after


def test_settles_under_kv_pressure_are_exact(monkeypatch):
    """A small KV cache: the stretches' pops evict cached contexts and are limited by the blocks
    free; the settled requests' frees enter the free queue before the stretch ends."""
    fast, slow, settles, _ = run_both(QUICK + ["engine.gpu_memory_utilization=0.25"], monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert sum(r.num_preemptions for r in fast.requests) == sum(r.num_preemptions for r in slow.requests)
    assert settles, settles


def test_views_of_a_stretch_with_settled_requests_are_exact(monkeypatch):
    """least-kv reads each replica's KV usage at every dispatch, in the middle of stretches whose
    departed requests were settled (`Stretch.blocks_added` leaves them to the cache)."""
    sets = QUICK + ["replicas=2", "router.name=least-kv", "workload.arrival.rate_per_s=4"]
    fast, slow, settles, _ = run_both(sets, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert len(settles) > 10, settles


def test_shared_system_prompt_is_exact(monkeypatch):
    """Conversations sharing a system prompt: a departed request's prompt blocks are held by
    others too (its free releases only its own references, counted before the free)."""
    fast, slow, settles, _ = run_both(QUICK + ["workload.shared_prefix={tokens: 512, groups: 2}"], monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert settles, settles
