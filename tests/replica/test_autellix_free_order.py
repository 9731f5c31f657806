"""Autellix on an open-loop trace with prefix keys (Mooncake's hash ids): a stretch through
finishes ends before a step two requests leave together, so their blocks are freed in that
step's level order, as stepping frees them. The free queue's order decides which cached blocks
are evicted first; before this, the stretch freed them in its first step's order."""

from __future__ import annotations

from pathlib import Path

import pytest

from servesim import load_scenario, simulate
from servesim.replica import policy_stops
from servesim.replica.kv_release import BlockRelease

from tests.cluster.helpers import assert_same_steps, outcome

MOONCAKE = str(Path(__file__).resolve().parents[2] / "examples" / "mooncake.yaml")
SETS = ["scheduler.name=autellix", "workload.num_requests=300"]


def run(sets: list[str], monkeypatch) -> tuple:
    """(result, request ids in the order each replica's KV cache freed them, stretches ended
    early)."""
    freed: dict[int, list[int]] = {}  # (by cache: across replicas a stretch's frees come at its end)
    ended = [0]
    free, free_all, end = BlockRelease.free, BlockRelease.free_all, policy_stops.end_before_shared_departure
    inside = [False]

    def log_free(self, req_id):
        if not inside[0]:
            freed.setdefault(id(self), []).append(req_id)
        return free(self, req_id)

    def log_free_all(self, req_ids):
        freed.setdefault(id(self), []).extend(req_ids)
        inside[0] = True
        try:
            return free_all(self, req_ids)
        finally:
            inside[0] = False

    def count_ended(st, k_safe):
        k = st.k
        end(st, k_safe)
        ended[0] += st.k < k

    monkeypatch.setattr(BlockRelease, "free", log_free)
    monkeypatch.setattr(BlockRelease, "free_all", log_free_all)
    monkeypatch.setattr(policy_stops, "end_before_shared_departure", count_ended)
    result = simulate(load_scenario(MOONCAKE, sets), keep_steps=True)
    monkeypatch.undo()
    return result, sorted(freed.values()), ended[0]


def test_open_loop_keyed_frees_in_stepping_order(monkeypatch):
    fast, fast_freed, ended = run(SETS, monkeypatch)
    slow, slow_freed, _ = run(SETS + ["engine.fast_forward=false"], monkeypatch)
    assert fast.num_fast_forwarded_steps > 0.9 * fast.summary()["num_steps"]  # (it stretched)
    assert ended >= 1  # a stretch ended before a shared departure (main's ran through it)
    assert sorted(sum(fast_freed, [])) == list(range(300))
    assert fast_freed == slow_freed  # (main: requests 58 and 49 freed the other way round)
    rows = [(r.id, r.first_token_s, r.finish_s, r.num_preemptions, r.num_cached_tokens) for r in fast.requests]
    assert rows == [(r.id, r.first_token_s, r.finish_s, r.num_preemptions, r.num_cached_tokens)
                    for r in slow.requests]


@pytest.mark.parametrize("extra, least", [(["replicas=8", "workload.trace.speedup=2"], 60),  # (88 of 300)
                                          (["replicas=4", "router.name=least-requests", "workload.trace.speedup=1"], 4)])
def test_open_loop_keyed_calls_join_stretches_exactly(extra, least, monkeypatch):
    """Lone calls with prefix keys join the keyed stretch in flight (`keyed_join`: keyed joins on
    for autellix without finish notices, since such stretches end before shared departures):
    frees, results and step logs are stepping's."""
    from servesim.replica import fast_forward

    joins = [0]
    keyed_join = fast_forward.keyed_join

    def count_joins(engine, st, now_s):
        joined = keyed_join(engine, st, now_s)
        joins[0] += joined
        return joined

    monkeypatch.setattr(fast_forward, "keyed_join", count_joins)
    fast, fast_freed, _ = run(SETS + extra, monkeypatch)  # (`run` undoes the patches)
    slow, slow_freed, _ = run(SETS + extra + ["engine.fast_forward=false"], monkeypatch)
    assert joins[0] >= least, joins  # (main: none, keyed joins were off)
    assert fast_freed == slow_freed
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
