"""A keyed policy's running batch is in key order after every step's `_order_running`, which
sorts only where it does not know what moved: with static keys (priority) it places the
requests appended since the last sort, and Autellix also those whose level moved, found by
bisection on their old keys (`queues.place_sorted`). Checked at every step of overloaded runs
(admissions, preemptions, swaps, level moves), and the placing path is shown to run."""

from __future__ import annotations

from pathlib import Path

import pytest

from servesim import load_scenario, simulate
from servesim.replica.schedulers import priority
from servesim.replica.schedulers.priority import KeyedScheduler

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
N = 800
OVERLOAD = {"azure-conv.yaml": [f"workload.num_requests={N}", "workload.trace.speedup=10"],
            # (programs of four calls: a program's calls share its service, so they stay eager)
            "agent-programs.yaml": [f"workload.num_requests={N}", "workload.arrival.rate_per_s=20"]}


@pytest.mark.parametrize("example, sets", [
    ("azure-conv.yaml", ["scheduler.name=autellix"]),
    ("azure-conv.yaml", ["scheduler.name=autellix", "scheduler.mode=atlas", "scheduler.preemption_mode=recompute"]),
    ("agent-programs.yaml", ["scheduler.name=autellix"]),
    ("azure-conv.yaml", ["scheduler.name=priority"]),
])
def test_running_batch_is_in_key_order_after_every_sort(example, sets, monkeypatch):
    order, place = KeyedScheduler._order_running, priority.place_sorted
    seen = {"sorts": 0, "placed": 0, "moved": 0}

    def checked(self, key):
        moved = self._moved
        order(self, key)
        seen["sorts"] += 1
        assert self.running == sorted(self.running, key=key)
        seen["moved"] += bool(moved)
        assert not self._moved and not self._appended

    def counted(*args):
        seen["placed"] += 1
        return place(*args)

    monkeypatch.setattr(KeyedScheduler, "_order_running", checked)
    monkeypatch.setattr(priority, "place_sorted", counted)
    result = simulate(load_scenario(str(EXAMPLES / example), OVERLOAD[example] + sets))
    assert result.summary()["num_finished"] == N
    assert seen["placed"] > seen["sorts"] // 2, seen  # (most steps place, not sort)
    if "autellix" in sets[0]:
        assert seen["moved"] > seen["sorts"] // 4, seen  # (levels moved between many sorts)
