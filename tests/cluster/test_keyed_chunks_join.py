"""Mooncake's long prompts (49 % of them exceed the 8,192-token budget) join a stretch in flight
with all their chunks (`replica/keyed_chunk_join.py`): the first beside the decodes at the join
step s, a budget's worth at s + 1, ..., the rest with the first token at s + q, each chunk's
blocks allocated and registered at its step; a stretch cut inside those steps leaves the turn
with the chunks that ran. The results, step log included, are those of stepping."""

from __future__ import annotations

from pathlib import Path

import pytest

from servesim import load_scenario, simulate
from servesim.replica import keyed_join, stretch_apply

from .helpers import assert_same_steps, outcome

MOONCAKE = str(Path(__file__).resolve().parents[2] / "examples" / "mooncake.yaml")
BUSY = ["workload.num_requests=1000", "replicas=8", "router.name=least-requests", "workload.trace.speedup=2"]


def run_both(sets: list[str], monkeypatch) -> tuple:
    """(fast-forwarded, stepped) results and the fast run's counts: turns that joined with three
    chunks or more, and stretches applied with such a turn cut after its second chunk's step and
    before its last. Each turn cut inside its chunk steps leaves the apply with the full keyed
    blocks of its computed tokens registered, as the running pass registers them (the next
    step's running pass would register the rest too, so the results alone do not show it)."""
    counts = {"joined": 0, "cut": 0}
    join_in_chunks, apply_rests = keyed_join.join_in_chunks, stretch_apply.apply_rests
    apply_stretch = stretch_apply.StretchApply._apply_stretch
    cut: list = []

    def counted_join(engine, st, req, chunk_fn, chunks, *args):
        counts["joined"] += len(chunks) >= 2
        return join_in_chunks(engine, st, req, chunk_fn, chunks, *args)

    def counted_apply(st, *args):
        steps: dict[int, list[int]] = {}
        for s, i, _ in st.rests:
            steps.setdefault(i, []).append(s)
        counts["cut"] += sum(1 for js in steps.values() if len(js) >= 2 and js[0] < st.k <= js[-1])
        cut.extend(found := apply_rests(st, *args))
        return found

    def checked_apply(engine, st):
        del cut[:]
        done = apply_stretch(engine, st)
        kv = engine.kv
        for req in cut:
            keys = req.kv_block_keys
            assert kv._held[req.id].num_keyed == min(req.num_computed_tokens // kv.block_size, keys.num_blocks)
        return done

    monkeypatch.setattr(keyed_join, "join_in_chunks", counted_join)
    monkeypatch.setattr(stretch_apply, "apply_rests", counted_apply)
    monkeypatch.setattr(stretch_apply.StretchApply, "_apply_stretch", checked_apply)
    fast = simulate(load_scenario(MOONCAKE, sets), keep_steps=True)
    done = dict(counts)
    slow = simulate(load_scenario(MOONCAKE, sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert counts == done  # (stepping joins nothing)
    return fast, slow, done


@pytest.mark.parametrize("extra", [[], ["scheduler.name=priority"], ["engine.max_num_batched_tokens=4096"],
                                   ["engine.long_prefill_token_threshold=3000"],
                                   ["engine.gpu_memory_utilization=0.5"]])
def test_turns_join_with_many_chunks_exactly(extra, monkeypatch):
    fast, slow, counts = run_both(BUSY + extra, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert counts["joined"] > 0.02 * len(fast.requests), counts  # turns joined with three chunks or more
    assert counts["cut"] > 0, counts  # and stretches cut inside their chunk steps
