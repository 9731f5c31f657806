"""After a join (or a launch) at a replica among many, a stretch is priced on from the scalar
state the join left, `Engine.join_ahead` steps ahead (`Stretch.price_on`), not by a numpy chunk
to a horizon `lookahead` arrival gaps away that the next arrival routed there cuts a few dozen
steps on: a prompt-only join (vllm-v0, sglang), a prompt joining with its chunks (sarathi; also
the one a shared step started, at its rest) and a next turn (keyed_join), as a plain join since
cl31. The run is stepping's, and the path ran."""

from __future__ import annotations

import pytest

from servesim.replica import fast_forward, shared_chunk, stretch_join
from servesim.replica.stretch_pricing import StretchPricing
from tests.cluster.helpers import assert_same_steps
from tests.factories import simulate_example

AZURE = ("azure-conv.yaml", ["workload.trace.speedup=4"])
SESSIONS = ("sessions.yaml", ["workload.arrival.rate_per_s=2"])
MOONCAKE = ("mooncake.yaml", ["workload.trace.speedup=1"])


def priced_in(monkeypatch, owner, name: str, example: str, sets: list[str]) -> tuple[int, int]:
    """`example` with `sets` on 4 replicas behind least-requests, fast-forwarded and stepped, with
    the same summary and step logs: (how many calls of `owner.name` returned true, how many numpy
    chunks were priced inside those calls)."""
    calls, chunks, inside = [], [], []
    original, chunk = getattr(owner, name), StretchPricing._chunk

    def counted(*args):
        inside.append(1)
        try:
            done = original(*args)
        finally:
            inside.pop()
        calls.append(done)
        return done

    monkeypatch.setattr(owner, name, counted)
    monkeypatch.setattr(StretchPricing, "_chunk",
                        lambda self, steps: (inside and chunks.append(1)) or chunk(self, steps))
    sets = [*sets, "replicas=4", "router.name=least-requests"]
    (a, a_sum), (b, b_sum) = simulate_example(example, sets), simulate_example(example, sets, fast_forward=False)
    assert a_sum == b_sum
    assert_same_steps(a, b)
    return sum(calls), len(chunks)


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
    example, sets = workload
    joins, chunks = priced_in(monkeypatch, module, join, example,
                              [f"scheduler.name={scheduler}", "workload.num_requests=600", *sets])
    assert joins > least and chunks < 0.05 * joins, (joins, chunks)


def test_a_stretch_launched_at_a_replica_among_many_is_priced_by_the_scalar_loop(monkeypatch):
    # The same for a new stretch through finishes: `join_ahead` steps (also for a length a policy
    # capped, `FastForward.max_steps`: `price_on`), extended by its end while nothing happens there
    # (vllm on Mooncake at 8 replicas, 1,000 requests: 277 numpy chunks priced at launches before
    # the forty-second round)
    launches, chunks = priced_in(monkeypatch, fast_forward.FastForwarding, "_fast_forward", "mooncake.yaml",
                                 ["workload.num_requests=400", "workload.trace.speedup=1"])
    assert launches > 60 and chunks < 0.05 * launches, (launches, chunks)
