"""A keyed policy's running batch is in key order after every step's `_order_running`, which
with static keys (priority; edf while no request has a deadline) places only the requests
appended since the last sort (admissions, swap-ins). Checked at every step of overloaded runs
(admissions, preemptions, swaps), and the placing path is shown to run; a policy whose keys
move (autellix) sorts."""

from __future__ import annotations

from pathlib import Path

import pytest

from servesim import load_scenario, simulate
from servesim.replica.schedulers import priority
from servesim.replica.schedulers.priority import KeyedScheduler

AZURE_CONV = str(Path(__file__).resolve().parents[2] / "examples" / "azure-conv.yaml")
N = 800
OVERLOAD = [f"workload.num_requests={N}", "workload.trace.speedup=10"]
MIXED = ["workload.attributes.priorities={0: 1, 1: 2, 2: 1}"]  # (admissions then sort before running requests)


@pytest.mark.parametrize("sets, placing", [
    (["scheduler.name=priority"], True),
    (["scheduler.name=priority"] + MIXED, True),
    (["scheduler.name=priority", "scheduler.preemption=false"] + MIXED, True),
    (["scheduler.name=edf"], True),
    (["scheduler.name=autellix"], False),
])
def test_running_batch_is_in_key_order_after_every_sort(sets, placing, monkeypatch):
    order, kept = KeyedScheduler._order_running, priority.kept_order
    seen = {"sorts": 0, "placed": 0}

    def checked(self, key):
        # (static keys sorted at the last step and nothing appended since: left as it is, no sort)
        seen["placed"] += not self._appended and self.static_keys and self._sorted_static
        order(self, key)
        seen["sorts"] += 1
        assert self.running == sorted(self.running, key=key)
        assert not self._appended

    def counted(running, appended, key):
        seen["placed"] += appended * 8 <= len(running)  # (else it sorts)
        assert appended  # (none appended: `_order_running` keeps the batch without a call)
        return kept(running, appended, key)

    monkeypatch.setattr(KeyedScheduler, "_order_running", checked)
    monkeypatch.setattr(priority, "kept_order", counted)
    result = simulate(load_scenario(AZURE_CONV, OVERLOAD + sets))
    assert result.summary()["num_finished"] == N
    if placing:
        assert seen["placed"] > seen["sorts"] // 2, seen  # (most steps place, not sort)
    else:
        assert seen["placed"] == 0 and seen["sorts"] > 100, seen
