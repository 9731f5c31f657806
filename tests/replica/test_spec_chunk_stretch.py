"""Sarathi's chunk steps with speculative decoding (a prompt's successive chunks beside the same
speculating decodes, `SpecStretch.prompt`) give exactly the results of stepping one by one,
and they really run: with KV blocks running short, arrivals kept behind the spent budget, a
perf model without the scalar decode form, and a router reading every replica's state."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.replica.replica import Replica
from servesim.replica.spec_stretch import SpecStretch
from tests.cluster.helpers import assert_same_steps, outcome, reads_everything, run  # noqa: F401  (fixture)
from tests.factories import VectorOnlyToyPerf, applied_steps, make_engine, make_request, serve
from tests.replica.test_chunk_stretch import long_prompts
from tests.replica.test_shared_chunk import overload
from tests.replica.test_spec_fast_forward import assert_same_spec_run


@pytest.fixture
def chunk_steps(monkeypatch):
    """The step count of every speculative chunk stretch applied."""
    return applied_steps(monkeypatch, SpecStretch, lambda s: s.prompt is not None)


def spec_engine_run(reqs, fast_forward: bool, num_blocks: int, perf=None):
    engine, _, kv, loop, _ = make_engine(num_blocks=num_blocks, scheduler="sarathi", params={"chunk_size": 128},
                                         max_num_batched_tokens=2048, max_num_seqs=16, num_speculative_tokens=3,
                                         spec_acceptance_rate=0.7, rng=np.random.default_rng(7),
                                         fast_forward=fast_forward, defer_finishes=fast_forward, perf=perf)
    serve(engine, loop, reqs)
    engine.drain(loop.now_s)
    kv.check_all_free()
    return engine


@pytest.mark.parametrize("seed,num_blocks,perf", [(1, 3000, None), (2, 400, None), (3, 250, None),
                                                  (5, 400, VectorOnlyToyPerf())])
def test_spec_chunk_stretches_match_step_by_step(chunk_steps, seed, num_blocks, perf):
    a_reqs, b_reqs = long_prompts(seed, False), long_prompts(seed, False)
    a = spec_engine_run(a_reqs, True, num_blocks, perf)
    fast_chunk_steps = sum(chunk_steps)
    b = spec_engine_run(b_reqs, False, num_blocks, perf)
    assert sum(chunk_steps) == fast_chunk_steps and b.num_fast_forwarded_steps == 0  # (stepping plans none)
    assert fast_chunk_steps > 0.25 * a.num_steps, (fast_chunk_steps, a.num_steps)
    assert_same_spec_run(a, b, a_reqs, b_reqs, num_blocks)


def test_kv_running_short_ends_a_spec_chunk_stretch_before_a_preemption(chunk_steps):
    a_reqs, b_reqs = long_prompts(7, False, 60), long_prompts(7, False, 60)
    a = spec_engine_run(a_reqs, True, 150)
    b = spec_engine_run(b_reqs, False, 150)
    assert sum(r.num_preemptions for r in a_reqs) > 0 and chunk_steps
    assert_same_spec_run(a, b, a_reqs, b_reqs, 150)


def test_an_arrival_waits_behind_the_spent_budget(chunk_steps):
    """A decodes (speculating); B's 1,280-token prompt runs in chunks of 127 beside it: ten
    full chunks (steps 0-9) are one stretch, its 10 last tokens the step after. C arrives
    during the stretch: it waits from the step after the one in flight and is admitted
    after B's last chunk, as stepping does."""
    def reqs():
        return [make_request(0, 100, 200, 0.0), make_request(1, 1280, 5, 0.05), make_request(2, 50, 5, 0.15)]

    a_reqs, b_reqs = reqs(), reqs()
    a = spec_engine_run(a_reqs, True, 3000)
    b = spec_engine_run(b_reqs, False, 3000)
    assert chunk_steps == [10]
    assert_same_spec_run(a, b, a_reqs, b_reqs, 3000)
    log = a.recorder.step_log(3000)
    chunked = np.flatnonzero(log.prefill_tokens == 127)
    assert len(chunked) == 10 and np.all(np.diff(chunked) == 1)
    assert np.all(log.output_tokens[chunked] >= 1) and log.output_tokens[chunked].sum() > 10  # (drafts accepted)
    waits = log.num_waiting[chunked]
    assert waits[0] == 0 and waits[-1] == 1 and np.all(np.diff(waits) >= 0)  # C joined mid-stretch
    after = chunked[-1] + 1
    assert log.prefill_tokens[after] == 10 + 50 and log.num_waiting[after] == 0  # B's rest, then C admitted


def test_cluster_reads_inside_spec_chunk_stretches_are_exact(chunk_steps, reads_everything, monkeypatch):
    """A router reading every field of every replica's view at each arrival (the real perf
    model, prompts up to 4,000 tokens): views read inside speculative chunk stretches, steps
    into them, count their steps (the prompt's chunks, the drafts accepted) exactly."""
    inside = []
    rest = Replica._rest

    def rest_seen(self, st, j):
        if isinstance(st, SpecStretch) and st.prompt is not None and j:
            inside.append(j)
        return rest(self, st, j)

    monkeypatch.setattr(Replica, "_rest", rest_seen)
    sets = ["scheduler.name=sarathi", "scheduler.chunk_size=256", "workload.lengths.dataset=null",
            "workload.lengths.prompt_tokens=[200, 4000]", "workload.lengths.output_tokens=[1, 200]",
            f"router.name={reads_everything}", "engine.num_speculative_tokens=3", "engine.spec_acceptance_rate=0.7"]
    fast = run(sets)
    assert sum(chunk_steps) > 0.3 * sum(len(r.steps) for r in fast.replicas)
    assert len(inside) > 200
    slow = run(sets, fast_forward=False)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)


def test_a_prompt_alone_runs_its_chunks_as_one_stretch(chunk_steps):
    """No decode beside it (nothing speculates): its 1,280 tokens in chunks of 128 are nine
    full chunks fast-forwarded and the last one stepped, priced as stepping prices them."""
    a_reqs, b_reqs = [make_request(0, 1280, 20, 0.0)], [make_request(0, 1280, 20, 0.0)]
    a = spec_engine_run(a_reqs, True, 3000)
    b = spec_engine_run(b_reqs, False, 3000)
    assert chunk_steps == [9]
    assert_same_spec_run(a, b, a_reqs, b_reqs, 3000)


@pytest.mark.parametrize("seed,num_blocks", [(1, 3000), (2, 300)])
def test_shared_steps_start_spec_chunk_stretches(monkeypatch, seed, num_blocks):
    """Under overload a prompt always waits, so the step of one prompt's last chunk gives the
    rest of the budget to the next prompt's first chunk (Sarathi's shared step): with
    speculating decodes it is step 0 of a chunk stretch whose later chunks are the budget the
    decodes leave (the first prompt one of them), and the run is stepping's."""
    shared = applied_steps(monkeypatch, SpecStretch, lambda s: s.prompt is not None and s._extra0 != 0)
    a_reqs, b_reqs = overload(seed), overload(seed)
    a = spec_engine_run(a_reqs, True, num_blocks)
    fast = list(shared)
    b = spec_engine_run(b_reqs, False, num_blocks)
    assert shared == fast and b.num_fast_forwarded_steps == 0  # (stepping plans none)
    # (107 and 109 shared stretches of 150 prompts, 4.3 and 4.0 steps each, when written)
    assert len(fast) > 0.5 * len(a_reqs) and sum(fast) > 3 * len(fast), (len(fast), sum(fast))
    assert_same_spec_run(a, b, a_reqs, b_reqs, num_blocks)
