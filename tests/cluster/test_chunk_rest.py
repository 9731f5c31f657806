"""Sarathi's prompt chunks, its last chunk and the decode steps after it planned as one stretch
(`replica/chunk_rest.py`): fast-forwarded runs equal stepping's (every request's times, tokens,
preemptions and cached tokens, every replica's step log), and the path really ran: stretches
planned with a prompt's rest, most of them reaching it, and arrivals inside the chunk steps held
to the rest's step."""

from __future__ import annotations

import pytest

from servesim.replica import chunk_rest, chunk_stretch, engine_arrivals, shared_chunk

from .helpers import assert_same_steps, outcome, reads_everything, run, sessions_both  # noqa: F401  (fixture)

# Sarathi with a small budget (a turn's prompt takes tens of chunks) on busy conversations.
BUSY = ["scheduler.name=sarathi", "scheduler.chunk_size=256", "workload.num_requests=300",
        "workload.arrival.rate_per_s=2", "workload.sessions.think_time_s=1"]
# A router that reads the replicas' prefix caches: Sarathi's turns keep their prefix keys
# there (`Scheduler.looks_up_prefixes`), so stretches are planned with keyed prompts and
# decodes (with none, most turns join stretches with their chunks instead: `chunk_join`).
READS_CACHES = ["router.name=llm-d"]


@pytest.fixture
def rests(monkeypatch):
    """What the runs that follow did: stretches planned with a prompt's rest (after a plain or a
    shared step), the rest's step q and the steps each had when applied, arrivals held to q."""
    seen = {"planned": [], "shared": 0, "held": 0}
    plan = chunk_rest.chunks_then_decodes

    def planned(engine, *args, **kw):
        ok = plan(engine, *args, **kw)
        if ok:
            seen["planned"].append(engine.stretch)
            seen["shared"] += kw.get("shared", args[-1] if len(args) == 8 else None) is not None
        return ok

    monkeypatch.setattr(chunk_stretch, "chunks_then_decodes", planned)
    monkeypatch.setattr(shared_chunk, "chunks_then_decodes", planned)
    end_at_rest = engine_arrivals.end_at_rest

    def held(engine, st, now_s):
        seen["held"] += 1
        return end_at_rest(engine, st, now_s)

    monkeypatch.setattr(engine_arrivals, "end_at_rest", held)
    return seen


def _reached(seen) -> int:
    """Stretches that ran their prompt's rest (its join step) before they were applied."""
    return sum(st.k > st.spent_to for st in seen["planned"])


@pytest.mark.parametrize("extra", [
    [],  # one replica: next turns come back to the context they left
    ["workload.sessions.think_time_s=0", "workload.sessions.think_time_dist=fixed"],  # a follow-up at a finish
    ["workload.shared_prefix={tokens: 512, groups: 2}"],  # a finish frees only the blocks it held last
    ["engine.gpu_memory_utilization=0.25"],  # a small cache: stretches limited to the blocks free
])
def test_sessions_rest_and_decodes_as_one_stretch_match_stepping(rests, monkeypatch, extra):
    fast, slow, _ = sessions_both(BUSY + READS_CACHES + extra, monkeypatch)
    assert all(r.kv_block_keys is not None for r in fast.requests)  # (keyed turns: the keyed path ran)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert len(rests["planned"]) >= 10, len(rests["planned"])  # (main: none)
    assert _reached(rests) >= 5, _reached(rests)
    assert rests["shared"] >= 1  # (after a shared step too)


def test_replicas_with_a_state_reading_router_are_exact(rests, reads_everything, monkeypatch):
    """Views read inside the prompt's chunk steps, at its rest and after it."""
    sets = BUSY + ["replicas=3", f"router.name={reads_everything}", "workload.arrival.rate_per_s=4"]
    fast, slow, _ = sessions_both(sets, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert len({r.replica for r in fast.requests}) == 3
    # (6 reached: turns without keys mostly join with their chunks; 14 when they had keys)
    assert _reached(rests) >= 5, _reached(rests)
    assert rests["held"] >= 1, rests  # (an arrival inside the chunk steps waited to the rest's step)


def test_open_loop_arrivals_held_to_the_rest_match_stepping(rests):
    """Poisson arrivals, no prefix keys: arrivals inside the chunk steps wait to the rest's step,
    where stepping's `schedule` admits them beside it."""
    sets = ["scheduler.name=sarathi", "scheduler.chunk_size=128", "workload.arrival.rate_per_s=4", "replicas=2"]
    fast, slow = run(sets), run(sets, fast_forward=False)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert len(rests["planned"]) >= 10, len(rests["planned"])
    assert rests["held"] >= 5, rests
