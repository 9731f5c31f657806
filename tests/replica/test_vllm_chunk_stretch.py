"""vLLM's prompt chunks fast-forwarded: a long prompt's full-budget chunks beside the same
decodes run as one `ChunkStretch` whose steps allocate the prompt's blocks and register its
keyed ones as the running pass would (`Scheduler.chunks_allocate`), exactly as stepping, also
when a router reads the prefix index inside the stretch (`ChunkStretch.settle`)."""

from __future__ import annotations

import numpy as np
import pytest

from servesim import load_scenario, simulate
from servesim.replica.chunk_stretch import ChunkStretch
from servesim.core.loop import PRIO_ARRIVAL
from tests.cluster.helpers import assert_same_steps, outcome
from tests.factories import assert_same_run, make_engine, make_request, serve
from tests.replica.test_chunk_stretch import chunk_steps  # noqa: F401  (fixture)


def long_prompts(seed: int, n: int = 120):
    """Prompts up to 1,500 tokens (chunks of about 250 under a 256-token budget), half of them
    keyed from a few shared prefixes (runs of 4 blocks, as Mooncake's 512-token hashes are
    runs of 32), short outputs."""
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(0.1, n))
    reqs = []
    for i in range(n):
        kw = {}
        if rng.random() < 0.5:
            base = int(rng.integers(0, 3)) * 100
            kw = dict(hash_ids=tuple(range(base, base + int(rng.integers(2, 24)))), hash_block_tokens=64)
        reqs.append(make_request(i, int(rng.integers(1, 1500)), int(rng.integers(1, 120)), float(t[i]), **kw))
    return reqs


def engine_run(reqs, fast_forward: bool, num_blocks: int, defer: bool):
    engine, _, kv, loop, _ = make_engine(num_blocks=num_blocks, max_num_batched_tokens=256, max_num_seqs=16,
                                         fast_forward=fast_forward, defer_finishes=defer)
    serve(engine, loop, reqs)
    kv.check_all_free()
    return engine


@pytest.mark.parametrize("seed,num_blocks,defer", [(1, 3000, False), (2, 3000, True), (3, 300, True), (4, 160, False)])
def test_vllm_chunk_stretches_match_step_by_step(chunk_steps, seed, num_blocks, defer):
    a_reqs, b_reqs = long_prompts(seed), long_prompts(seed)
    a = engine_run(a_reqs, True, num_blocks, defer)
    fast_chunk_steps = sum(chunk_steps)
    b = engine_run(b_reqs, False, num_blocks, defer)
    assert sum(chunk_steps) == fast_chunk_steps  # (stepping plans none)
    # (vLLM's chunk stretches are of three steps at least: `min_chunk_steps`; 15 to 68 here)
    assert len(chunk_steps) >= 12 and fast_chunk_steps > 0.05 * a.num_steps, (fast_chunk_steps, a.num_steps)
    assert_same_run(a, b, a_reqs, b_reqs, num_blocks, ("finish_s", "first_token_s", "token_steps",
                                                        "num_preemptions", "num_cached_tokens"))
    assert a.kv.num_hit_tokens == b.kv.num_hit_tokens > 0
    if num_blocks < 200:
        assert sum(r.num_preemptions for r in b_reqs) > 0


def test_an_arrival_waits_behind_the_spent_budget_and_admits_after_the_last_chunk(chunk_steps):
    """A decodes; B's 1,280-token prompt gets chunks of 255 beside it: five full chunks
    (steps 0-4) are one stretch, its last 5 tokens the step after. C arrives inside the
    stretch: it waits from the step after the one in flight (the budget is spent) and is
    admitted in B's last step, as stepping does."""
    def reqs():
        return [make_request(0, 100, 60, 0.0), make_request(1, 1280, 5, 0.05), make_request(2, 50, 5, 0.08)]

    a_reqs, b_reqs = reqs(), reqs()
    a = engine_run(a_reqs, True, 3000, False)
    b = engine_run(b_reqs, False, 3000, False)
    assert chunk_steps == [5]
    assert_same_run(a, b, a_reqs, b_reqs, 3000)
    log = a.recorder.step_log(3000)
    chunked = np.flatnonzero(log.prefill_tokens == 255)
    assert len(chunked) == 5 and np.all(np.diff(chunked) == 1)
    assert log.num_waiting[chunked[0]] == 0 and log.num_waiting[chunked[-1]] == 1  # C waited mid-stretch
    assert log.prefill_tokens[chunked[-1] + 1] == 1280 - 5 * 255 + 50  # B's rest and C's prompt


def test_a_router_reading_the_prefix_index_inside_chunk_stretches(chunk_steps, monkeypatch):
    """Mooncake's conductor reads every replica's cached prefix blocks at each arrival: inside
    a chunk stretch the prompt's blocks of the steps so far are allocated and registered
    first (`settle`), so it reads the index stepping would have."""
    settled = []
    settle = ChunkStretch.settle

    def seen(self, kv, t):
        before = self._settled
        settle(self, kv, t)
        settled.append(self._settled > before)

    monkeypatch.setattr(ChunkStretch, "settle", seen)
    sets = ["scheduler.name=vllm", "workload.num_requests=150", "replicas=3", "router.name=mooncake",
            "workload.trace.speedup=1.0"]

    def run(fast_forward: bool):
        s = sets + [f"engine.fast_forward={str(fast_forward).lower()}"]
        return simulate(load_scenario("examples/mooncake.yaml", s), keep_steps=True)

    fast = run(True)
    assert sum(chunk_steps) > 0 and sum(settled) > 0
    slow = run(False)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)


def test_settle_registers_the_prompt_blocks_of_the_steps_so_far():
    """Inside a chunk stretch the prefix index lacks the prompt's blocks of its steps 1, 2, ...
    until the stretch ends; `settle` at time t allocates and registers those of the steps up to
    the one in flight, leaving the index (and the free blocks) as stepping has them at t."""
    ids = tuple(range(1, 21))  # 20 hash blocks of 64 tokens: a keyed 1,280-token prompt

    def reqs():
        return [make_request(0, 100, 60, 0.0), make_request(1, 1280, 5, 0.05, hash_ids=ids, hash_block_tokens=64)]

    probe = make_request(9, 1280, 5, hash_ids=ids, hash_block_tokens=64)
    engines = []
    for fast_forward in (True, False):
        engine, _, _, loop, _ = make_engine(num_blocks=3000, max_num_batched_tokens=256, max_num_seqs=16,
                                            fast_forward=fast_forward)
        for r in reqs():
            loop.schedule(r.arrival_s, lambda t, req: engine.add_request(req, t), r, PRIO_ARRIVAL)
        loop.run(until_s=0.2)
        engines.append(engine)
    fast, slow = engines
    st = fast.stretch
    assert type(st) is ChunkStretch and st.step_in_flight(0.2) >= 2
    before = fast.kv.num_cached_prefix_tokens(probe)
    st.settle(fast.kv, 0.2)
    after = fast.kv.num_cached_prefix_tokens(probe)
    assert before < after == slow.kv.num_cached_prefix_tokens(probe)
    assert fast.kv.num_blocks_of(1) == slow.kv.num_blocks_of(1)  # the prompt holds the blocks stepping gave it
