"""Sarathi's chunk stretches (a prompt's successive chunks beside the same decodes, as one
event) give exactly the results of stepping one by one, and they really run: with arrivals
kept behind the spent budget, KV blocks running short, prefix keys, a perf model without the
scalar decode form, a state-reading router over replicas and a crash cutting them."""

from __future__ import annotations

import numpy as np
import pytest

from servesim import load_scenario, simulate
from servesim.replica.chunk_stretch import ChunkStretch
from servesim.replica.engine_lifecycle import EngineLifecycle
from servesim.replica.replica import Replica
from tests.cluster.helpers import assert_same_steps, outcome, reads_everything, run  # noqa: F401  (fixture)
from tests.factories import VectorOnlyToyPerf, applied_steps, assert_same_run, make_engine, make_request, serve


@pytest.fixture
def chunk_steps(monkeypatch):
    """The step count of every chunk stretch applied (settled by its end or by a crash)."""
    return applied_steps(monkeypatch, ChunkStretch)


def long_prompts(seed: int, keys: bool, n: int = 120):
    """Poisson arrivals of prompts up to 1,500 tokens (many chunks of 128) and short outputs."""
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(0.08, n))
    reqs = []
    for i in range(n):
        kw = {}
        if keys and rng.random() < 0.5:  # shared prefixes from a small pool
            kw = dict(hash_ids=tuple(range(int(rng.integers(0, 3)), int(rng.integers(3, 30)))), hash_block_tokens=32)
        reqs.append(make_request(i, int(rng.integers(1, 1500)), int(rng.integers(1, 120)), float(t[i]), **kw))
    return reqs


def engine_run(reqs, fast_forward: bool, num_blocks: int, perf=None, defer_finishes: bool = False):
    engine, _, kv, loop, _ = make_engine(num_blocks=num_blocks, scheduler="sarathi", params={"chunk_size": 128},
                                         max_num_batched_tokens=2048, max_num_seqs=16, fast_forward=fast_forward,
                                         perf=perf, defer_finishes=defer_finishes)
    serve(engine, loop, reqs)
    engine.drain(loop.now_s)
    kv.check_all_free()
    return engine


@pytest.mark.parametrize("seed,num_blocks,keys,perf", [
    (1, 3000, False, None), (2, 400, False, None), (3, 250, True, None), (4, 3000, True, None),
    (5, 400, False, VectorOnlyToyPerf()),
])
def test_chunk_stretches_match_step_by_step(chunk_steps, seed, num_blocks, keys, perf):
    a_reqs, b_reqs = long_prompts(seed, keys), long_prompts(seed, keys)
    a = engine_run(a_reqs, True, num_blocks, perf)
    fast_chunk_steps = sum(chunk_steps)
    b = engine_run(b_reqs, False, num_blocks, perf)
    assert sum(chunk_steps) == fast_chunk_steps  # (stepping plans none)
    assert fast_chunk_steps > 0.25 * a.num_steps, (fast_chunk_steps, a.num_steps)
    assert_same_run(a, b, a_reqs, b_reqs, num_blocks)


def test_an_arrival_waits_behind_the_spent_budget_without_cutting(chunk_steps):
    """A decodes; B's 1,280-token prompt runs in chunks of 127 beside it: ten full chunks
    (steps 0-9) are one stretch, its 10 last tokens the step after. C arrives during the
    stretch: it waits from the step after the one in flight, and is admitted after B's
    last chunk, as stepping does."""
    def reqs():
        return [make_request(0, 100, 60, 0.0), make_request(1, 1280, 5, 0.05), make_request(2, 50, 5, 0.15)]

    a_reqs, b_reqs = reqs(), reqs()
    a = engine_run(a_reqs, True, 3000)
    b = engine_run(b_reqs, False, 3000)
    assert chunk_steps == [10]
    assert_same_run(a, b, a_reqs, b_reqs, 3000)
    log = a.recorder.step_log(3000)
    chunked = np.flatnonzero(log.prefill_tokens == 127)
    assert len(chunked) == 10 and np.all(np.diff(chunked) == 1)
    waits = log.num_waiting[chunked]
    assert waits[0] == 0 and waits[-1] == 1 and np.all(np.diff(waits) >= 0)  # C joined mid-stretch
    after = chunked[-1] + 1
    assert log.prefill_tokens[after] == 10 + 50 and log.num_waiting[after] == 0  # B's rest, then C admitted


def test_kv_running_short_ends_the_stretch_before_a_preemption(chunk_steps):
    """Decodes that need blocks the pool lacks stop the stretch where stepping preempts."""
    a_reqs, b_reqs = long_prompts(7, False, 60), long_prompts(7, False, 60)
    a = engine_run(a_reqs, True, 150)
    b = engine_run(b_reqs, False, 150)
    assert sum(r.num_preemptions for r in a_reqs) > 0 and chunk_steps
    assert_same_run(a, b, a_reqs, b_reqs, 150)


@pytest.mark.parametrize("num_blocks,prompt_at_s,limited", [(70, 0.1, (3, 7)), (75, 0.3, (4, 7))])
def test_the_stretch_stops_where_decode_blocks_run_out(monkeypatch, num_blocks, prompt_at_s, limited):
    """Three decodes beside a 1,000-token prompt that took nearly every free block at
    admission (chunks of 125: seven full ones before its last): the stretch keeps the steps
    whose decode blocks fit, and stepping goes on from there (a preemption follows)."""
    stretches = []
    apply = ChunkStretch.apply

    def seen(self, engine):
        stretches.append((self.k, self.kmax))
        return apply(self, engine)

    monkeypatch.setattr(ChunkStretch, "apply", seen)

    def reqs():
        return ([make_request(i, 20, 200, 0.0) for i in range(3)]
                + [make_request(3, 1000, 5, prompt_at_s), make_request(4, 1000, 5, prompt_at_s + 0.01)])

    a_reqs, b_reqs = reqs(), reqs()
    a = engine_run(a_reqs, True, num_blocks)
    b = engine_run(b_reqs, False, num_blocks)
    assert limited in stretches and (7, 7) in stretches
    assert sum(r.num_preemptions for r in a_reqs) == 1
    assert_same_run(a, b, a_reqs, b_reqs, num_blocks)


MOONCAKE = ["scheduler.name=sarathi", "scheduler.chunk_size=256", "workload.num_requests=80", "replicas=3"]


def cluster_run(sets: list[str], fast_forward: bool):
    sets = sets + [f"engine.fast_forward={str(fast_forward).lower()}"]
    return simulate(load_scenario("examples/mooncake.yaml", sets), keep_steps=True)


def test_cluster_reads_inside_chunk_stretches_are_exact(chunk_steps, reads_everything, monkeypatch):
    """A router reading every field of every replica's view at each Poisson arrival (the real
    perf model, prompts up to 4,000 tokens): views read inside chunk stretches, steps into
    them, count their steps exactly."""
    inside = []
    rest = Replica._rest

    def rest_seen(self, st, j):
        if isinstance(st, ChunkStretch) and j:
            inside.append(j)
        return rest(self, st, j)

    monkeypatch.setattr(Replica, "_rest", rest_seen)
    sets = ["scheduler.name=sarathi", "scheduler.chunk_size=256", "workload.lengths.dataset=null",
            "workload.lengths.prompt_tokens=[200, 4000]", "workload.lengths.output_tokens=[1, 200]",
            f"router.name={reads_everything}"]
    fast = run(sets)
    assert sum(chunk_steps) > 0.5 * sum(len(r.steps) for r in fast.replicas)
    assert len(inside) > 500
    slow = run(sets, fast_forward=False)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)


def test_a_crash_settles_a_chunk_stretch_exactly(chunk_steps, monkeypatch):
    """Replica 1 crashes 4 steps into a chunk stretch of 7 (two prompts of 48 s in chunks):
    the steps that ended are applied, the one in flight is lost, as stepping loses it."""
    cut = []
    crash = EngineLifecycle.crash

    def crash_seen(self, now_s):
        st = self.stretch
        cut.append((type(st).__name__, st.steps_before(now_s), st.k) if st is not None else None)
        return crash(self, now_s)

    monkeypatch.setattr(EngineLifecycle, "crash", crash_seen)
    sets = MOONCAKE + ["router.name=round-robin", "faults.crashes=[{replica: 1, at_s: 48.1, recovery_s: 20.0}]"]
    fast = cluster_run(sets, True)
    assert cut == [("ChunkStretch", 4, 7)] and 4 in chunk_steps
    slow = cluster_run(sets, False)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert sum(1 for r in fast.requests if r.moves) == 2  # the crash took both prompts back
