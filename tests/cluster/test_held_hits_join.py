"""Mooncake's long prompts whose prefix hits are blocks running requests hold (the trace's shared
first hash blocks) join a stretch in flight with two chunks (`replica/held_hits.py`,
`replica/keyed_chunk_join.py`); the results, step log included, are those of stepping."""

from __future__ import annotations

from pathlib import Path

import pytest

from servesim import load_scenario, simulate
from servesim.replica import held_hits, keyed_join

from .helpers import assert_same_steps, outcome

MOONCAKE = str(Path(__file__).resolve().parents[2] / "examples" / "mooncake.yaml")
BUSY = ["workload.num_requests=1000", "replicas=8", "router.name=least-requests", "workload.trace.speedup=2"]


def run_both(sets: list[str], monkeypatch) -> tuple:
    """(fast-forwarded, stepped) results and the fast run's counts: two-chunk joins with hits on
    held blocks, and lookups that found hits held only by requests that left the stretch."""
    counts = {"shared": 0, "departed": 0}
    join_in_chunks, departed = keyed_join.join_in_chunks, held_hits.departed_only

    def counted_join(engine, st, req, chunk_fn, chunks, cached, blocks, shared=0, *rest):
        counts["shared"] += shared > 0
        return join_in_chunks(engine, st, req, chunk_fn, chunks, cached, blocks, shared, *rest)

    def counted_departed(*args):
        found = departed(*args)
        counts["departed"] += bool(found)
        return found

    monkeypatch.setattr(keyed_join, "join_in_chunks", counted_join)
    monkeypatch.setattr(keyed_join, "departed_only", counted_departed)
    fast = simulate(load_scenario(MOONCAKE, sets), keep_steps=True)
    done = dict(counts)
    slow = simulate(load_scenario(MOONCAKE, sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert counts == done  # (stepping joins nothing)
    return fast, slow, done


@pytest.mark.parametrize("extra", [[], ["scheduler.name=priority"], ["engine.max_num_batched_tokens=4096"]])
def test_held_hits_join_in_two_chunks_exactly(extra, monkeypatch):
    fast, slow, counts = run_both(BUSY + extra, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert counts["shared"] > 0.01 * len(fast.requests), counts  # turns with held hits joined in two chunks


@pytest.mark.parametrize("extra", [[], ["scheduler.name=edf"], ["scheduler.name=andes"]])
def test_whole_prompts_with_held_hits_join_exactly(extra, monkeypatch):
    """A lone prompt that the budget the decodes leave covers, whose hits include blocks running
    requests hold, joins whole (moon32; refused before, each ending the stretch); the requests
    and the step log (its blocks in use from the join step less the shared ones) are stepping's."""
    whole = []
    log_shared = keyed_join.log_shared

    def counted(st, s, shared):
        whole.append(shared)
        return log_shared(st, s, shared)

    monkeypatch.setattr(keyed_join, "log_shared", counted)
    fast, slow, _ = run_both(BUSY + extra, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert len(whole) > 0.02 * len(fast.requests), len(whole)  # whole prompts with held hits joined
    assert min(whole) > 0
