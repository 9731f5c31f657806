"""Next turns whose prompts take two chunks of the token budget join the stretch in flight
(`replica/keyed_chunk_join.py`): the first chunk beside the decodes at the join step, the rest at
the next; the results, step log included, are those of stepping."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from servesim import load_scenario, simulate
from servesim.replica import keyed_join, policy_stops, stretch_apply

from .helpers import assert_same_steps, beside_rests, outcome, reads_everything  # noqa: F401  (fixture)

SESSIONS = str(Path(__file__).resolve().parents[2] / "examples" / "sessions.yaml")
# Busy conversations whose contexts outgrow a 2,048-token budget: most next turns take two chunks
BUSY = ["workload.num_requests=400", "workload.arrival.rate_per_s=2", "workload.sessions.think_time_s=1",
        "engine.max_num_batched_tokens=2048"]


def run_both(sets: list[str], monkeypatch) -> tuple:
    """(fast-forwarded, stepped) results, the turns that joined in two chunks, and the stretches
    applied with a rest that did not run (cut inside the first chunk's step)."""
    two, cut = [], []
    join_in_chunks, apply_rests = keyed_join.join_in_chunks, stretch_apply.apply_rests

    def counted_join(engine, st, req, *args):
        two.append(req.id)
        return join_in_chunks(engine, st, req, *args)

    def counted_apply(st, *args):
        cut.extend(s for s, _, _ in st.rests if s >= st.k)
        return apply_rests(st, *args)

    monkeypatch.setattr(keyed_join, "join_in_chunks", counted_join)
    monkeypatch.setattr(stretch_apply, "apply_rests", counted_apply)
    fast = simulate(load_scenario(SESSIONS, sets), keep_steps=True)
    n, m = len(two), len(cut)
    slow = simulate(load_scenario(SESSIONS, sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert len(two) == n  # (stepping joins nothing)
    return fast, slow, n, m


@pytest.mark.parametrize("extra", [[], ["scheduler.name=priority"], ["scheduler.name=hygen"],
                                   ["replicas=4", "router.name=least-requests", "workload.arrival.rate_per_s=6"]])
def test_turns_join_in_two_chunks_exactly(extra, monkeypatch):
    fast, slow, two, cut = run_both(BUSY + extra, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    # (32 of 400 at 1 replica, where most contexts are cached: the new tokens fit whole; 4 replicas: more)
    assert two > 0.05 * len(fast.requests), two  # turns joined with two chunks
    assert cut > 0, cut  # and stretches cut inside a first chunk's step


@pytest.mark.parametrize("router", ["least-kv", "reads-everything"])
def test_views_count_the_rests(router, reads_everything, monkeypatch):
    """Routers reading the views at every arrival (least-kv: the KV blocks in use first; a test
    router reading every field): the rest's blocks count from its step (`Stretch.blocks_added`;
    least-kv routes differently without them), its prompt tokens from each chunk's."""
    name = reads_everything if router == "reads-everything" else router
    sets = BUSY + ["replicas=2", f"router.name={name}", "workload.arrival.rate_per_s=4"]
    fast, slow, two, _ = run_both(sets, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert two > 0.05 * len(fast.requests), two


def test_rests_evicting_cached_contexts_are_exact(monkeypatch):
    """Caches full of freed contexts: the rests' pops (granted at the stretch's end) evict cached
    contexts that a later turn joining the same stretch must not hit: `keyed_join`'s eviction
    check counts them (without, 552 of these 600 requests differ from stepping)."""
    sets = ["workload.num_requests=600", "engine.gpu_memory_utilization=0.5", "replicas=4",
            "router.name=least-requests", "workload.arrival.rate_per_s=2", "engine.max_num_batched_tokens=4096"]
    fast, slow, two, _ = run_both(sets, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert two > 0.1 * len(fast.requests), two


@pytest.mark.parametrize("policy", [["scheduler.name=vllm"], ["scheduler.name=edf"], ["scheduler.name=fastswitch"],
                                    ["scheduler.name=hygen"], ["scheduler.name=andes"],
                                    ["scheduler.name=priority", "workload.attributes.priorities={0: 0.3, 1: 0.7}"]])
def test_a_turn_arriving_inside_a_joined_turns_chunks_joins_beside_its_rest(policy, monkeypatch):
    """A turn arriving while a joined turn's chunks take the whole budget waits (admitted nothing
    there, as stepping) to that turn's rest step and joins beside the rest with the budget the
    rest leaves, whole or with chunks of its own (`keyed_join`'s chain; before, it cut the
    stretch and ended it there): stepping's results, step log included."""
    beside = beside_rests(monkeypatch)
    fast, slow, two, _ = run_both(BUSY + ["replicas=4", "router.name=least-requests", "workload.arrival.rate_per_s=8",
                                         *policy], monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert two > 0.05 * len(fast.requests), two
    # (vllm: 40 with chunks and 8 whole of these 400 requests; none before: each ended its stretch)
    assert beside["chunks"] >= 10 and beside["whole"] >= 2, beside


def test_hygen_turns_beside_offline_requests_are_exact(monkeypatch):
    """HyGen with offline requests: a lone waiting request that is offline sits in a queue of its
    own, which `keyed_join` read as the online one (a StopIteration out of the run before); online
    turns still join with their chunks where no offline request is held."""
    sets = BUSY + ["scheduler.name=hygen", "workload.attributes.offline_share=0.3", "replicas=4",
                   "router.name=least-requests", "workload.arrival.rate_per_s=8"]
    fast, slow, two, _ = run_both(sets, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert two > 0, two


@pytest.mark.parametrize("router", ["least-requests", "least-kv"])
def test_continuum_turns_join_in_chunks_through_its_pins(router, monkeypatch):
    """Continuum's pins set timers in almost every stretch, and a turn in chunks joined only
    without any (each other one ended its stretch). Now its chunk steps run through the pins
    that expire there (an expiry frees a pin's blocks; nothing waits, so the steps are the
    same), the stretch is cut at the first pin it must stop at (one sharing a block: a shared
    system prompt here), and a joined turn that pins when it finishes keeps its rests' blocks.
    Stepping's results, step log included; least-kv reads the blocks the views count."""
    bounded, kept = [], []
    apply_rests = stretch_apply.apply_rests

    def counted_stop(st, t):
        k = st.k
        policy_stops.stop_before(st, t)
        bounded.append(k - st.k)

    def counted_apply(st, steps_of, *args):
        kept.extend(i for s, i, _ in st.rests if s < st.k and st.remaining[i] <= st.k and st.kept[0](st.reqs[i]))
        return apply_rests(st, steps_of, *args)

    monkeypatch.setattr(keyed_join, "policy_stops",
                        SimpleNamespace(stop_before=counted_stop, fire_before_join=policy_stops.fire_before_join,
                                        first_shared_pin=policy_stops.first_shared_pin))
    monkeypatch.setattr(stretch_apply, "apply_rests", counted_apply)  # (before `run_both` wraps it)
    sets = BUSY + ["scheduler.name=continuum", "workload.shared_prefix.tokens=512", "replicas=4",
                   f"router.name={router}", "workload.arrival.rate_per_s=6"]
    fast, slow, two, _ = run_both(sets, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert two > 0.2 * len(fast.requests), two  # (166 of 400 with least-requests; none before)
    assert sum(1 for d in bounded if d > 0) > 5, bounded  # chunk steps cut at a pin's timer
    assert len(kept) > 5, kept  # turns that pinned with their rests' blocks
