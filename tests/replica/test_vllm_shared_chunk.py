"""vLLM's shared step (one prompt's last chunk beside the next prompt's first, admitted with
the budget left, its prefix hits looked up) as step 0 of a chunk stretch whose later chunks
allocate and register the second prompt's blocks (`replica/shared_chunk.py`,
`VLLMSteps.shares_running_chunk`): exactly the results of stepping one by one, keyed prompts
sharing prefixes, KV blocks short, and a router reading the prefix index inside such stretches;
each asserts that such stretches ran."""

from __future__ import annotations

import numpy as np
import pytest

from servesim import load_scenario, simulate
from servesim.replica.chunk_stretch import ChunkStretch
from tests.cluster.helpers import assert_same_steps, outcome
from tests.factories import applied_steps, assert_same_run, make_request
from tests.replica.test_vllm_chunk_stretch import engine_run  # (vllm, budget 256, 16 sequences)


@pytest.fixture
def shared_steps(monkeypatch):
    """The step count of every chunk stretch applied whose step 0 was a shared step."""
    return applied_steps(monkeypatch, ChunkStretch, lambda s: s.shared is not None)


def overload(seed: int, n: int = 150):
    """Arrivals faster than the replica serves them (a prompt always waiting): prompts of
    300-3,000 tokens, half of them keyed from three shared prefixes, outputs of 1-80 tokens."""
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(0.03, n))
    reqs = []
    for i in range(n):
        kw = {}
        if rng.random() < 0.5:
            base = int(rng.integers(0, 3)) * 100
            kw = dict(hash_ids=tuple(range(base, base + int(rng.integers(2, 24)))), hash_block_tokens=64)
        reqs.append(make_request(i, int(rng.integers(300, 3000)), int(rng.integers(1, 80)), float(t[i]), **kw))
    return reqs


@pytest.mark.parametrize("seed,num_blocks,defer", [(1, 3000, False), (2, 3000, True), (3, 400, True), (4, 200, False)])
def test_vllm_shared_steps_match_step_by_step(shared_steps, seed, num_blocks, defer):
    a_reqs, b_reqs = overload(seed), overload(seed)
    a = engine_run(a_reqs, True, num_blocks, defer)
    fast = list(shared_steps)
    b = engine_run(b_reqs, False, num_blocks, defer)
    assert shared_steps == fast  # (stepping plans none)
    # many prompts start in a shared step that runs on as a stretch (60, 93, 95 and 95 of the
    # 150 when written, 3.7-4.7 steps each; the 400 and 200 blocks preempt)
    assert len(fast) > 0.3 * len(a_reqs), len(fast)
    assert sum(fast) > 3 * len(fast), (sum(fast), len(fast))
    assert_same_run(a, b, a_reqs, b_reqs, num_blocks, ("finish_s", "first_token_s", "token_steps",
                                                        "num_preemptions", "num_cached_tokens"))
    assert a.kv.num_hit_tokens == b.kv.num_hit_tokens > 0
    if num_blocks < 300:
        assert sum(r.num_preemptions for r in b_reqs) > 0


def test_a_router_reading_the_prefix_index_inside_shared_stretches(shared_steps):
    """Mooncake's conductor reads every replica's cached prefix blocks at each arrival, also
    inside stretches begun by a shared step (the second prompt's blocks of the steps so far
    settled first): the run and every replica's step log are stepping's."""
    sets = ["scheduler.name=vllm", "workload.num_requests=300", "replicas=2", "router.name=mooncake",
            "workload.trace.speedup=2.0"]

    def run(fast_forward: bool):
        s = sets + [f"engine.fast_forward={str(fast_forward).lower()}"]
        return simulate(load_scenario("examples/mooncake.yaml", s), keep_steps=True)

    fast = run(True)
    assert len(shared_steps) > 20, len(shared_steps)
    slow = run(False)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
