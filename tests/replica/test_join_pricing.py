"""After a join (or a launch) at a replica among many, a stretch is priced on from the scalar
state the join left, `Engine.join_ahead` steps ahead (`Stretch.price_on`), not by a numpy chunk
to a horizon `lookahead` arrival gaps away that the next arrival routed there cuts a few dozen
steps on: a prompt-only join (vllm-v0, sglang), a prompt joining with its chunks (sarathi; also
the one a shared step started, at its rest) and a next turn (keyed_join), as a plain join since
cl31. The run is stepping's, and the path ran."""

from __future__ import annotations

import numpy as np
import pytest

from servesim import load_scenario, simulate
from servesim.replica import fast_forward, shared_chunk, stretch_join
from servesim.replica.stretch_pricing import StretchPricing
from tests.factories import STEP_LOG_COLUMNS
from tests.golden.cases import ROOT

AZURE = ("azure-conv.yaml", ["workload.trace.speedup=4"])
SESSIONS = ("sessions.yaml", ["workload.arrival.rate_per_s=2"])
MOONCAKE = ("mooncake.yaml", ["workload.trace.speedup=1"])


# (until the forty-second round, at 8 replicas and 1,000 requests: vllm-v0 798 numpy chunks after
# its 929 prompt-only joins, sarathi 467 after its chunk and chain joins, vllm 206 after next turns'
# joins; sarathi on Mooncake 145 after a shared step's prompt joined at its rest, `chunks_then_decodes`)
@pytest.mark.parametrize("scheduler,module,join,workload,least", [
    ("vllm-v0", stretch_join, "_stall_join", AZURE, 400), ("sglang", stretch_join, "_stall_join", AZURE, 400),
    ("sarathi", stretch_join, "chunk_join", AZURE, 200), ("vllm", fast_forward, "keyed_join", SESSIONS, 300),
    ("sarathi", shared_chunk, "chunks_then_decodes", MOONCAKE, 40),
])
def test_a_join_at_a_replica_among_many_prices_on_by_the_scalar_loop(scheduler, module, join, workload, least,
                                                                     monkeypatch):
    joins, chunks, inside = [], [], []
    original, chunk = getattr(module, join), StretchPricing._chunk

    def counted_join(*args):
        inside.append(1)
        try:
            joined = original(*args)
        finally:
            inside.pop()
        joins.append(joined)
        return joined

    monkeypatch.setattr(module, join, counted_join)
    monkeypatch.setattr(StretchPricing, "_chunk", lambda self, steps: (inside and chunks.append(1)) or chunk(self, steps))

    def go(fast_forward: bool):
        example, sets = workload
        sets = [f"scheduler.name={scheduler}", "workload.num_requests=600", *sets, "replicas=4",
                "router.name=least-requests", f"engine.fast_forward={str(fast_forward).lower()}"]
        result = simulate(load_scenario(str(ROOT / "examples" / example), sets), keep_steps=True)
        summary = result.summary()
        summary.pop("wall_time_s")
        return result, summary

    (a, a_sum), (b, b_sum) = go(True), go(False)
    assert a_sum == b_sum
    for col in STEP_LOG_COLUMNS:
        assert np.array_equal(getattr(a.steps, col), getattr(b.steps, col)), col
    assert sum(joins) > least and len(chunks) < 0.05 * sum(joins), (sum(joins), len(chunks))


def test_a_stretch_launched_at_a_replica_among_many_is_priced_by_the_scalar_loop(monkeypatch):
    # The same for a new stretch through finishes whose length no policy caps (`FastForward.max_steps`):
    # `join_ahead` steps, extended by its end while nothing happens there (vllm on Mooncake at
    # 8 replicas, 1,000 requests: 277 numpy chunks priced at launches before the forty-second round)
    launches, chunks, inside = [], [], []
    launch, chunk = fast_forward.FastForwarding._fast_forward, StretchPricing._chunk

    def counted_launch(*args):
        inside.append(1)
        try:
            launched = launch(*args)
        finally:
            inside.pop()
        launches.append(launched)
        return launched

    monkeypatch.setattr(fast_forward.FastForwarding, "_fast_forward", counted_launch)
    monkeypatch.setattr(StretchPricing, "_chunk", lambda self, steps: (inside and chunks.append(1)) or chunk(self, steps))

    def go(fast_forward: bool):
        sets = ["workload.num_requests=400", "workload.trace.speedup=1", "replicas=4", "router.name=least-requests",
                f"engine.fast_forward={str(fast_forward).lower()}"]
        result = simulate(load_scenario(str(ROOT / "examples/mooncake.yaml"), sets), keep_steps=True)
        summary = result.summary()
        summary.pop("wall_time_s")
        return result, summary

    (a, a_sum), (b, b_sum) = go(True), go(False)
    assert a_sum == b_sum
    for col in STEP_LOG_COLUMNS:
        assert np.array_equal(getattr(a.steps, col), getattr(b.steps, col)), col
    assert sum(launches) > 60 and len(chunks) < 0.05 * sum(launches), (sum(launches), len(chunks))
