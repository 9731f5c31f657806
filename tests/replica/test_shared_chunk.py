"""Sarathi's shared step (one prompt's last chunk beside the next one's first) as step 0 of a
chunk stretch (`replica/shared_chunk.py`) gives exactly the results of stepping one by one, and
it really runs: under overload (a prompt always waiting), with KV blocks running short, a perf
model without the scalar chunk form, and a router reading every view inside such stretches."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.replica.chunk_stretch import ChunkStretch
from servesim.replica.replica import Replica
from servesim.cluster import routers
from tests.cluster.helpers import ReadsEverything, assert_same_steps, outcome, run
from tests.factories import VectorOnlyToyPerf, applied_steps, assert_same_run, make_request
from tests.replica.test_chunk_stretch import engine_run  # (sarathi, chunks of 128, 16 sequences)


@pytest.fixture
def shared_steps(monkeypatch):
    """The step count of every chunk stretch applied whose step 0 was a shared step."""
    return applied_steps(monkeypatch, ChunkStretch, lambda s: s.shared is not None)


def overload(seed: int, n: int = 150):
    """Arrivals far faster than the replica serves them: prompts of 100-1,200 tokens (chunks
    of 128 less the decodes), outputs of 1-80 tokens."""
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(0.01, n))
    return [make_request(i, int(rng.integers(100, 1200)), int(rng.integers(1, 80)), float(t[i])) for i in range(n)]


@pytest.mark.parametrize("seed,num_blocks,perf", [
    (1, 3000, None), (2, 300, None), (3, 120, None), (4, 300, VectorOnlyToyPerf()),
])
def test_shared_steps_match_step_by_step(shared_steps, seed, num_blocks, perf):
    a_reqs, b_reqs = overload(seed), overload(seed)
    a = engine_run(a_reqs, True, num_blocks, perf)
    fast = list(shared_steps)
    b = engine_run(b_reqs, False, num_blocks, perf)
    assert shared_steps == fast  # (stepping plans none)
    # many prompts start in a shared step that runs on as a stretch (113, 85, 41 and 76 of the
    # 150 when written; the 120 blocks preempt often)
    assert len(fast) > 0.25 * len(a_reqs), len(fast)
    assert sum(fast) > 3 * len(fast), (sum(fast), len(fast))
    assert_same_run(a, b, a_reqs, b_reqs, num_blocks)


def test_cluster_reads_inside_shared_stretches_are_exact(shared_steps, monkeypatch):
    """A router reading every field of every replica's view at each arrival, overloaded
    replicas (the real perf model): every view read, also inside stretches begun by a shared
    step and after it (the first prompt decoding, the second's chunks counted), is stepping's
    (it fails when they count the first prompt's last chunk one token off), and so is the run."""
    routers.REGISTRY.available()  # load the real ones first
    ReadsEverything.name = "test-reads-everything"
    monkeypatch.setitem(routers.REGISTRY._classes, ReadsEverything.name, ReadsEverything)
    inside, reads = [], []
    rest = Replica._rest

    def rest_seen(self, st, j):
        got = rest(self, st, j)
        if isinstance(st, ChunkStretch) and st.shared is not None and j:
            inside.append(j)
        reads.append((self.index, self.engine.loop.now_s, got))
        return got

    monkeypatch.setattr(Replica, "_rest", rest_seen)
    sets = ["scheduler.name=sarathi", "scheduler.chunk_size=256", "workload.arrival.rate_per_s=400",
            "workload.lengths.dataset=null", "workload.lengths.prompt_tokens=[200, 2000]",
            "workload.lengths.output_tokens=[1, 200]", f"router.name={ReadsEverything.name}"]
    fast = run(sets)
    fast_reads = list(reads)
    assert len(shared_steps) > 100
    assert len(inside) > 50
    reads.clear()
    slow = run(sets, fast_forward=False)
    assert fast_reads == reads
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
