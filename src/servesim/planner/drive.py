"""Runs many goodput bisections together: one batch of probes per round, through the cache.

Each bisection is a generator (see `goodput.bisect_goodput`) plus a function that turns a rate
into a scenario. A round collects the next rate of every open bisection, looks each scenario up
in the cache, sends the rest to the executor in one batch, and feeds the attainments back.
The order of results never depends on which worker finished first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Generator

from servesim.planner.cache import ProbeCache, resolve, scenario_key
from servesim.planner.goodput import Goodput, run_probe

RateToScenario = Callable[[float], dict[str, Any]]


@dataclass
class Bisection:
    """One bisection to drive, and what it produced."""

    search: Generator[float, float, Goodput]
    scenario_at: RateToScenario
    result: Goodput | None = None
    summaries: dict[float, dict] = field(default_factory=dict)  # rate -> probe summary

    @property
    def at_goodput(self) -> dict | None:
        """The probe summary at the goodput rate (None when nothing passed)."""
        return self.summaries.get(self.result.goodput_per_s) if self.result else None


@dataclass
class Counters:
    probes_run: int = 0
    probes_cached: int = 0


def drive(bisections: list[Bisection], executor, cache: ProbeCache, counters: Counters,
          on_round: Callable[[], None] | None = None) -> None:
    """Run every bisection to its end; fills `result` and `summaries` of each."""
    pending: dict[int, float] = {}
    for i, b in enumerate(bisections):
        _advance(b, i, None, pending)
    while pending:
        order = sorted(pending)
        keys, todo = {}, {}
        for i in order:
            scenario = bisections[i].scenario_at(pending[i])
            key = scenario_key(resolve(scenario, "planned scenario"))
            keys[i] = key
            if key in todo:
                continue  # the same scenario twice in one round runs once
            if cache.get(key) is None:
                todo[key] = scenario
            else:
                counters.probes_cached += 1
        todo_keys = list(todo)
        executor.map(run_probe, [todo[k] for k in todo_keys],
                     lambda j, summary: cache.put(todo_keys[j], summary))
        counters.probes_run += len(todo_keys)
        for i in order:
            rate = pending.pop(i)
            summary = cache.get(keys[i])
            bisections[i].summaries[rate] = summary
            _advance(bisections[i], i, summary["slo_attainment"], pending)
        if on_round:
            on_round()


def _advance(b: Bisection, i: int, attainment: float | None, pending: dict[int, float]) -> None:
    try:
        pending[i] = next(b.search) if attainment is None else b.search.send(attainment)
    except StopIteration as stop:
        b.result = stop.value
