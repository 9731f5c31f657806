"""Sarathi's chunk stretches on closed-loop workloads run on through their decodes' finishes, each
finish told at its time (`replica/chunk_through.py`, `replica/finish_notices.py`): a conversation's
next turn is made when its previous turn finishes inside the prompt's chunk steps, and the runs,
the step logs and every view a router reads equal stepping's."""

from __future__ import annotations

import pytest

from servesim.replica.chunk_stretch import ThroughChunkStretch
from tests.factories import applied_steps

from .helpers import assert_same_steps, outcome, reads_everything, sessions_both  # noqa: F401  (fixture)

# Sarathi with a small budget (a turn's prompt takes tens of chunks) on busy conversations:
# turns of other conversations finish while a prompt's chunks run.
BUSY = ["scheduler.name=sarathi", "scheduler.chunk_size=256", "workload.num_requests=300",
        "workload.arrival.rate_per_s=2", "workload.sessions.think_time_s=1"]


@pytest.fixture
def told_inside(monkeypatch):
    """The step count of every chunk stretch applied that told a departure at its time."""
    return applied_steps(monkeypatch, ThroughChunkStretch, lambda st: st.num_noticed > 0)



@pytest.mark.parametrize("extra", [
    [],  # one replica: next turns come back to the context they left
    ["workload.sessions.think_time_s=0", "workload.sessions.think_time_dist=fixed"],  # a follow-up at the finish ends it
    ["workload.shared_prefix={tokens: 512, groups: 2}"],  # a finish frees only the blocks it held last
])
def test_chunk_stretches_tell_finishes_inside_and_match_stepping(told_inside, monkeypatch, extra):
    fast, slow, told = sessions_both(BUSY + extra, monkeypatch)
    assert len(told_inside) >= 10, told_inside  # (main: none, chunk stretches stopped at a finish)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert fast.num_fast_forwarded_steps > 0.9 * len(fast.steps)


def test_replicas_with_a_state_reading_router_are_exact(told_inside, reads_everything, monkeypatch):
    """Views read inside such a stretch after a departure (finished and told, not yet applied)."""
    sets = BUSY + ["replicas=3", f"router.name={reads_everything}", "workload.arrival.rate_per_s=4"]
    fast, slow, told = sessions_both(sets, monkeypatch)
    assert len(told_inside) >= 10, told_inside
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert len({r.replica for r in fast.requests}) == 3
