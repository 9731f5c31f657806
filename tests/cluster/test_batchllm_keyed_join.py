"""BatchLLM's next turns join the stretch in flight (`replica/keyed_join.py`): its `schedule`
admits a lone waiting turn whole (its own group, its own token budget: `first_chunk`) when the
projected KV use allows, and each step sorts the batch by arrival, which puts the latest arrival
last. `joins_last` admits on a bound of that projection (the final blocks of every request the
stretch lists); a join the bound refuses ends the stretch. The results, step log included, are
stepping's; on main every next turn ended the stretch (none joined)."""

from __future__ import annotations

import pytest

from servesim.replica.schedulers.batchllm import BatchLLMScheduler

from .helpers import assert_same_steps, joins_both, outcome
from .test_keyed_join import BUSY

BATCHLLM = BUSY + ["scheduler.name=batchllm"]
TWO = ["replicas=2", "router.name=least-requests", "workload.arrival.rate_per_s=4"]


def run_both(sets: list[str], monkeypatch) -> tuple:
    """`joins_both` for BatchLLM, counting the turns `joins_last` refused on the projection's
    bound (arriving after every running request, so not for the order)."""
    return joins_both(sets, monkeypatch, BatchLLMScheduler,
                      lambda sched, req: max(r.arrival_s for r in sched.running) < req.arrival_s)


@pytest.mark.parametrize("extra", [[], TWO])
def test_batchllm_next_turns_join_exactly(extra, monkeypatch):
    fast, slow, joins, _ = run_both(BATCHLLM + extra, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    # (92 and 37 of 500 at 1 replica, 242 and 43 at 2)
    assert len(joins) > 0.15 * len(fast.requests), len(joins)
    assert sum(1 for c in joins if c > 0) > 0.05 * len(fast.requests)  # next turns, their context cached


@pytest.mark.parametrize("extra", [["scheduler.mem_threshold=0.5"], ["scheduler.mem_threshold=0.4"] + TWO])
def test_batchllm_turns_over_the_projections_bound_end_the_stretch(extra, monkeypatch):
    """A low `mem_threshold`: the bound refuses some turns (stepping then decides, admitting or
    holding them), the others join, and the results are stepping's."""
    fast, slow, joins, refused = run_both(BATCHLLM + extra, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    # (47 joined and 3 refused at 1 replica; 107 and 4 at 2)
    assert refused and len(joins) > 0.05 * len(fast.requests), (len(refused), len(joins))


def test_batchllm_token_cap_chunks_turns_that_then_step(monkeypatch):
    """With this policy's own token cap a turn whose prompt it chunks is not joined (its rest
    would come in the running pass: `max_join_chunks` 0); the turns it does not chunk join."""
    fast, slow, joins, _ = run_both(BATCHLLM + ["scheduler.max_num_batched_tokens=600"], monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert 0 < len(joins) < 0.1 * len(fast.requests), len(joins)  # (12 of 500)
