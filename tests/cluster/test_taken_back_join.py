"""A next turn whose previous turn left the stretch in flight takes its blocks back at its join
(`replica/held_hits.py`: `settle_departed`, `take_back`): the previous turn's growth and
registrations are made before the lookup, as stepping made them during its steps, the next
turn hits them, and the step log counts them free between the finish and the join. The
results, step log included, are those of stepping."""

from __future__ import annotations

from pathlib import Path

import pytest

from servesim import load_scenario, simulate
from servesim.replica import keyed_join

from .helpers import assert_same_steps, outcome

SESSIONS = str(Path(__file__).resolve().parents[2] / "examples" / "sessions.yaml")
BUSY = ["workload.num_requests=500", "workload.arrival.rate_per_s=2", "workload.sessions.think_time_s=1"]


@pytest.mark.parametrize("extra", [
    [],
    ["scheduler.name=trtllm"],
    ["scheduler.name=andes"],
    ["replicas=2", "router.name=least-requests", "workload.arrival.rate_per_s=4"],
])
def test_next_turns_take_back_their_previous_turns_blocks_exactly(extra, monkeypatch):
    counts = {"settled": 0, "taken": 0, "blocks": 0}
    settle, take_back = keyed_join.settle_departed, keyed_join.take_back

    def counted_settle(kv, st, s, req):
        before = len(st.settled or ())
        settle(kv, st, s, req)
        counts["settled"] += len(st.settled or ()) - before

    def counted_take_back(st, s, back):
        counts["taken"] += 1
        counts["blocks"] += sum(n for _, n in back)
        return take_back(st, s, back)

    monkeypatch.setattr(keyed_join, "settle_departed", counted_settle)
    monkeypatch.setattr(keyed_join, "take_back", counted_take_back)
    fast = simulate(load_scenario(SESSIONS, BUSY + extra), keep_steps=True)
    done = dict(counts)
    slow = simulate(load_scenario(SESSIONS, BUSY + extra + ["engine.fast_forward=false"]), keep_steps=True)
    assert counts == done  # (stepping joins nothing)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    # the path ran: previous turns settled, and next turns joined holding their blocks
    assert done["settled"] > 0.05 * len(fast.requests) and done["taken"] > 0.05 * len(fast.requests), done
    assert done["blocks"] > 10 * done["taken"], done  # (a context's blocks each: hundreds of tokens)
