"""Sarathi's shared step (one prompt's last chunk beside the next one's first) with speculative
decoding as step 0 of a speculative chunk stretch (`SpecStretch.prompt`, its step-0 chunk
differing: `spec_fast_forward` told by `Engine._repeats_chunk` from `shares_chunk`), and such
stretches going on past decodes that finish in step 0 (the chunk taking the budget they leave
from step 1), give exactly the results of stepping one by one, and they really run: under
overload, with KV blocks running short, a perf model without the scalar forms, and a router
reading every view inside them."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.replica.replica import Replica
from servesim.replica.spec_stretch import SpecStretch
from tests.cluster.helpers import assert_same_steps, outcome, reads_everything, run  # noqa: F401  (fixture)
from tests.factories import VectorOnlyToyPerf, applied_steps, make_request
from tests.replica.test_shared_chunk import overload
from tests.replica.test_spec_chunk_stretch import spec_engine_run
from tests.replica.test_spec_fast_forward import assert_same_spec_run


@pytest.fixture
def shared_steps(monkeypatch):
    """The step count of every speculative chunk stretch applied whose step 0 finished a prompt."""
    return applied_steps(monkeypatch, SpecStretch, lambda s: s.prompt is not None and s.prefills)


@pytest.fixture
def finish0_steps(monkeypatch):
    """The step count of every speculative chunk stretch applied that went on past finishes in step 0."""
    return applied_steps(monkeypatch, SpecStretch, lambda s: s.prompt is not None and s.finished_before(1))


@pytest.mark.parametrize("seed,num_blocks,perf", [
    (1, 3000, None), (2, 300, None), (3, 150, None), (4, 300, VectorOnlyToyPerf()),
])
def test_spec_shared_steps_match_step_by_step(shared_steps, finish0_steps, seed, num_blocks, perf):
    a_reqs, b_reqs = overload(seed), overload(seed)
    a = spec_engine_run(a_reqs, True, num_blocks, perf)
    fast = list(shared_steps)
    fast0 = list(finish0_steps)
    b = spec_engine_run(b_reqs, False, num_blocks, perf)
    assert shared_steps == fast  # (stepping plans none)
    # (137, 135, 74 and 104 of the 150 prompts start one when written, 3.3-3.8 steps each; the
    # 150 blocks preempt)
    assert len(fast) > 0.2 * len(a_reqs), len(fast)
    assert sum(fast) > 2.5 * len(fast), (sum(fast), len(fast))
    # stretches going on past a decode's finish in step 0 (32, 35, 9 when written; not without the
    # scalar decode form, which processing finishes late needs: `Engine.defer_finishes`)
    assert len(fast0) > (0.05 * len(a_reqs) if perf is None else -1), fast0
    assert_same_spec_run(a, b, a_reqs, b_reqs, num_blocks)



def test_the_shared_step_starts_the_next_prompts_chunk_stretch(shared_steps):
    """A decodes (speculating). B (200 tokens) and C (1,000) arrive together: B's first chunk
    takes the 127 tokens A leaves (C waits), then the shared step runs B's last 73 and C's first
    54; from there B speculates beside A and C takes 126 a step. That step and C's next seven
    chunks are one stretch (C at 54 + 7 * 126 = 936), its last 64 tokens the step after; the
    run, the step log and the draws are stepping's."""
    def reqs():
        return [make_request(0, 100, 200, 0.0), make_request(1, 200, 50, 0.05), make_request(2, 1000, 5, 0.05)]

    a_reqs, b_reqs = reqs(), reqs()
    a = spec_engine_run(a_reqs, True, 3000)
    b = spec_engine_run(b_reqs, False, 3000)
    assert shared_steps == [8]
    assert_same_spec_run(a, b, a_reqs, b_reqs, 3000)
    log = a.recorder.step_log(3000)
    assert log.prefill_tokens[:15].tolist() == [100, 0, 0, 0, 127, 73 + 54] + [126] * 7 + [64, 0]
    assert log.num_running[4:15].tolist() == [2] + [3] * 10  # (C admitted at the shared step)
    assert np.all(log.output_tokens[6:13] > 2)  # (A and B speculating: at least a token each)

def test_cluster_reads_inside_spec_shared_stretches_are_exact(shared_steps, reads_everything, monkeypatch):
    """A router reading every field of every replica's view at each arrival, overloaded
    replicas speculating (the real perf model): every view read, also steps into stretches begun
    by a shared step (the first prompt speculating, the second's chunks counted from its step-0
    chunk), is stepping's (it fails when they leave out the step-0 chunk's difference), and so
    is the run."""
    inside, reads = [], []
    rest = Replica._rest

    def rest_seen(self, st, j):
        got = rest(self, st, j)
        if isinstance(st, SpecStretch) and st.prompt is not None and st.prefills and j:
            inside.append(j)
        reads.append((self.index, self.engine.loop.now_s, got))
        return got

    monkeypatch.setattr(Replica, "_rest", rest_seen)
    sets = ["scheduler.name=sarathi", "scheduler.chunk_size=256", "workload.arrival.rate_per_s=400",
            "workload.lengths.dataset=null", "workload.lengths.prompt_tokens=[200, 2000]",
            "workload.lengths.output_tokens=[1, 200]", f"router.name={reads_everything}",
            "engine.num_speculative_tokens=3", "engine.spec_acceptance_rate=0.7"]
    fast = run(sets)
    fast_reads = list(reads)
    assert len(shared_steps) > 100  # (299 when written)
    assert len(inside) > 50  # (897)
    reads.clear()
    slow = run(sets, fast_forward=False)
    assert fast_reads == reads
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
