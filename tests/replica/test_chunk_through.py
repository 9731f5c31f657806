"""Sarathi's chunk stretches run on through their decodes' finishes (`replica/chunk_through.py`):
a decode that leaves gives its token of the budget to the prompt's chunk from the next step, the
finish is processed at the stretch's end with its time, and the run, the step log and every view
a router reads inside equal stepping's, with prefix keys, KV blocks running short, a perf model
without the scalar chunk form and a state-reading router over replicas (a perf model without the
scalar decode form processes no finish late: those stretches stop at the first,
`test_chunk_stretch.py`)."""

from __future__ import annotations

import pytest

from servesim import load_scenario, simulate
from servesim.cluster import routers
from servesim.replica.chunk_stretch import ChunkStretch
from servesim.replica.replica import Replica
from tests.cluster.helpers import ReadsEverything, assert_same_steps, outcome
from tests.factories import applied_steps, assert_same_run, make_request
from tests.replica.test_chunk_stretch import engine_run as chunk_engine_run, long_prompts


def engine_run(reqs, fast_forward: bool, num_blocks: int):
    """Sarathi with chunks of 128 on one engine that may process finishes late (as a run does)."""
    return chunk_engine_run(reqs, fast_forward, num_blocks, defer_finishes=True)


def departed_inside(st) -> bool:
    """Did a decode of the stretch emit its last token before the stretch's last step?"""
    return st.through and st.finished_before(st.k - 1) > 0


@pytest.fixture
def through_steps(monkeypatch):
    """The step count of every chunk stretch applied that ran on through a decode's finish."""
    return applied_steps(monkeypatch, ChunkStretch, departed_inside)


def test_a_finish_inside_gives_its_budget_to_the_chunk(through_steps):
    """A (100 tokens of prompt, 6 of output) and B (2,000 of prompt) arrive together: step 0
    runs A's prompt and B's first 28 tokens (a shared step), steps 1-5 A's last five tokens
    beside chunks of 127 of B's, steps 6-15 chunks of 128 (the budget A left, B alone); B's
    last 57 tokens are stepped. Steps 0-15 are one stretch, A finishing inside at its time
    (the end of step 5), as stepping."""
    def reqs():
        return [make_request(0, 100, 6, 0.0), make_request(1, 2000, 5, 0.0)]

    a_reqs, b_reqs = reqs(), reqs()
    a = engine_run(a_reqs, True, 3000)
    b = engine_run(b_reqs, False, 3000)
    assert through_steps == [16]
    assert_same_run(a, b, a_reqs, b_reqs, 3000)
    chunks = a.recorder.step_log(3000).prefill_tokens
    assert list(chunks[:17]) == [128] + [127] * 5 + [128] * 10 + [57], chunks
    assert a_reqs[0].finish_s == b_reqs[0].finish_s and a_reqs[0].token_steps == [0, 5]


@pytest.mark.parametrize("seed,num_blocks,keys", [
    (11, 3000, False), (12, 400, False), (13, 250, True), (14, 3000, True), (15, 180, False), (16, 180, True),
])
def test_through_chunk_stretches_match_step_by_step(through_steps, seed, num_blocks, keys):
    """Poisson prompts up to 1,500 tokens (the toy perf model: each step priced by
    `step_time_s`, it has no scalar chunk form), with prefix keys, and KV blocks short."""
    a_reqs, b_reqs = long_prompts(seed, keys), long_prompts(seed, keys)
    a = engine_run(a_reqs, True, num_blocks)
    fast = len(through_steps)
    b = engine_run(b_reqs, False, num_blocks)
    assert len(through_steps) == fast  # (stepping plans none)
    assert fast >= 5, fast
    assert_same_run(a, b, a_reqs, b_reqs, num_blocks)


class RecordsEverything(ReadsEverything):
    """`ReadsEverything`, keeping every field it read of every view (each routing decision)."""

    seen: list = []

    def route(self, req, view):
        for i in view.candidates:
            v = view.view(i)
            self.seen.append((req.id, i, v.num_outstanding, v.num_waiting, v.num_running, v.kv_used_blocks,
                              v.outstanding_prefill_tokens, v.outstanding_decode_tokens))
        return super().route(req, view)


@pytest.mark.parametrize("scenario,sets", [
    (None, ["workload.trace=null", "workload.arrival.process=poisson", "workload.arrival.rate_per_s=40",
            "workload.lengths.dataset=null", "workload.lengths.prompt_tokens=[200, 4000]",
            "workload.lengths.output_tokens=[1, 200]", "workload.num_requests=400", "replicas=4",
            "engine.gpu_memory_utilization=0.3"]),
    ("examples/mooncake.yaml", ["workload.num_requests=150", "replicas=3", "workload.trace.speedup=2"]),
])
def test_cluster_reads_after_a_finish_inside_are_exact(through_steps, monkeypatch, scenario, sets):
    """A router reading every field of every replica's view at each arrival (the real perf
    model; Poisson prompts, and Mooncake's keyed prompts, whose finishes free blocks by
    reference): every view read, also inside through stretches after a departure (finished
    decodes, their freed blocks, the grown chunks), equals stepping's, and so do the runs."""
    routers.REGISTRY.available()  # (the real ones first)
    monkeypatch.setitem(routers.REGISTRY._classes, "test-records-everything", RecordsEverything)
    inside = []
    rest = Replica._rest

    def rest_seen(self, st, j):
        if isinstance(st, ChunkStretch) and st.through and j and st.finished_before(j):
            inside.append(j)
        return rest(self, st, j)

    monkeypatch.setattr(Replica, "_rest", rest_seen)
    sets = sets + ["scheduler.name=sarathi", "scheduler.chunk_size=256", "router.name=test-records-everything"]
    results, reads = [], []
    for ff in (True, False):
        RecordsEverything.seen = []
        results.append(simulate(load_scenario(scenario, sets + [f"engine.fast_forward={str(ff).lower()}"]),
                                keep_steps=True))
        reads.append(RecordsEverything.seen)
    assert len(through_steps) > 20 and len(inside) > 20, (len(through_steps), len(inside))
    assert reads[0] == reads[1]
    assert outcome(results[0]) == outcome(results[1])
    assert_same_steps(*results)


@pytest.mark.parametrize("seed", range(4))
def test_the_chunks_made_run_by_run_are_the_chunks_step_by_step(seed):
    """`_chunks_to(k)`: step j's prompt tokens `chunk + d(j)`, d(j) the decodes whose last token
    was a step before j (ties and departures at or past k included); `_gone_before(k)`: the sum
    of the d(j)."""
    import random
    from bisect import bisect_right

    from servesim.replica.chunk_through import ChunkThrough

    class Stub:
        _chunks_to = ChunkThrough._chunks_to
        _gone_before = ChunkThrough._gone_before

    rng = random.Random(seed)
    for _ in range(500):
        st = Stub()
        st.chunk = rng.randint(1, 600)
        st._sorted_rem = sorted(rng.randint(1, 40) for _ in range(rng.randint(0, 8)))
        k = rng.randint(0, 45)
        gone = [bisect_right(st._sorted_rem, j) for j in range(k)]
        assert st._chunks_to(k) == [st.chunk + d for d in gone] and st._gone_before(k) == sum(gone)
