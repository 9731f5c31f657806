"""Keys only for the hash ids another request may share (`Engine.shared_keys_only`,
`Request.num_shared_hash_ids`): a Mooncake prompt's own ids are plain blocks, never registered,
evicted or dropped, and every result, step log and prefix hit included, is the same as with every
id keyed (preemptions by recompute included: a request finds its own blocks again either way; a
policy that may swap keys a request whole from its first preemption on)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from servesim import load_scenario, simulate
from servesim.replica.prefix_groups import Group
from servesim.replica.schedulers.base import Scheduler
from servesim.workload import build_workload, replay
from servesim.workload.traces.registry import SHIPPED_TRACES
from servesim.workload.sessions import SessionPlanner
from servesim.workload.traces.writers import write_trace

from .helpers import assert_same_steps, outcome

MOONCAKE = str(Path(__file__).resolve().parents[2] / "examples" / "mooncake.yaml")
TIGHT = ["workload.num_requests=600", "engine.gpu_memory_utilization=0.5"]


def run(sets: list[str], monkeypatch, every_id: bool, path: str | None = None) -> tuple:
    """(result, blocks registered) with or without the counts (Mooncake's replay unless `path`)."""
    registered = [0]
    append_held, register = Group.append_held, Group.register

    def counted_append(self, n):
        registered[0] += n
        return append_held(self, n)

    def counted_register(self, s0, s1):
        registered[0] += s1 - s0
        return register(self, s0, s1)

    with monkeypatch.context() as m:
        m.setattr(Group, "append_held", counted_append)
        m.setattr(Group, "register", counted_register)
        if every_id:  # (the replay leaves the counts unknown, no session turn is known as its last: every id keyed)
            m.setattr(replay, "_with_shared", lambda req, n: req)
            m.setattr(SessionPlanner, "is_last", lambda *args: False)
        result = simulate(load_scenario(path or MOONCAKE, sets), keep_steps=True)
    return result, registered[0]


@pytest.mark.parametrize("extra", [[], ["scheduler.name=priority", "replicas=4", "router.name=least-requests",
                                        "workload.trace.speedup=2"]])
def test_own_ids_unkeyed_give_the_same_results(extra, monkeypatch):
    own, own_blocks = run(TIGHT + extra, monkeypatch, every_id=False)
    every, every_blocks = run(TIGHT + extra, monkeypatch, every_id=True)
    assert outcome(own) == outcome(every)
    assert [r.num_cached_tokens_total for r in own.requests] == [r.num_cached_tokens_total for r in every.requests]
    assert_same_steps(own, every)
    assert own.prefix_hits == every.prefix_hits and own.prefix_hits[1] > 0
    assert sum(r.num_preemptions for r in own.requests) > 10  # (preempted requests hit their own blocks again)
    assert own_blocks < 0.6 * every_blocks  # (most of a Mooncake prompt's blocks are its own: not registered)


SWAPS = ["workload.num_requests=300", "engine.gpu_memory_utilization=0.35", "engine.swap_space_gb=0.5"]


@pytest.mark.parametrize("name", ["andes", "fastswitch"])
def test_a_policy_that_swaps_keys_every_id_from_a_first_preemption(name, monkeypatch):
    """A policy that may swap keys only the shared ids until a request's first preemption (by
    swap or recompute), then every id (`key_every_id`): the same results with swaps, recomputes
    after swaps and swaps after recomputes, and fewer blocks registered."""
    swaps = [0]
    swap_out = Scheduler.swap_out

    def counted(self, req, out, reuse_key=None):
        ok = swap_out(self, req, out, reuse_key)
        swaps[0] += ok
        return ok

    monkeypatch.setattr(Scheduler, "swap_out", counted)
    sets = SWAPS + [f"scheduler.name={name}"]
    own, own_blocks = run(sets, monkeypatch, every_id=False)
    num_swaps = swaps[0]
    every, every_blocks = run(sets, monkeypatch, every_id=True)
    assert outcome(own) == outcome(every)
    assert [r.num_cached_tokens_total for r in own.requests] == [r.num_cached_tokens_total for r in every.requests]
    assert_same_steps(own, every)
    assert own.prefix_hits == every.prefix_hits and own.prefix_hits[1] > 0
    preemptions = sum(r.num_preemptions for r in own.requests)
    assert num_swaps > 100 and preemptions - num_swaps > 50  # (both kinds, many requests more than once)
    assert own_blocks < every_blocks  # (those not preempted yet register their shared ids only; equal if every id is keyed)


@pytest.mark.parametrize("fmt", ["jsonl.gz", "csv"])
def test_a_trace_file_gets_the_counts_and_the_arrays_results(fmt, tmp_path, monkeypatch):
    """A trace read row by row from a file (Mooncake's JSONL as shipped, or a CSV copy) counts
    the shared ids in a first pass: the same blocks registered as the replay of the shipped
    arrays, and the same results."""
    if fmt == "csv":  # (the rows at their own times, speedup 1: written and read back exactly)
        path = tmp_path / "mooncake.csv"
        whole = load_scenario(MOONCAKE, ["workload.num_requests=600", "workload.trace.speedup=1"])
        write_trace(build_workload(whole.workload, np.random.SeedSequence(0)).arrivals(), path)
    else:
        path = SHIPPED_TRACES["mooncake-conversation"].path
    arrays, arrays_blocks = run(TIGHT, monkeypatch, every_id=False)
    from_file, file_blocks = run(TIGHT + [f"workload.trace.name={path}"], monkeypatch, every_id=False)
    assert outcome(from_file) == outcome(arrays)
    assert [r.num_cached_tokens_total for r in from_file.requests] == [r.num_cached_tokens_total
                                                                      for r in arrays.requests]
    assert_same_steps(from_file, arrays)
    assert from_file.prefix_hits == arrays.prefix_hits and sum(r.num_preemptions for r in arrays.requests) > 10
    assert file_blocks == arrays_blocks  # (every id keyed, as without the first pass: 3.8 times as many)


SESSIONS = str(Path(__file__).resolve().parents[2] / "examples" / "sessions.yaml")
SESSION_SETS = ["workload.num_requests=300", "engine.gpu_memory_utilization=0.35", "workload.arrival.rate_per_s=2",
                "workload.sessions.turns=[1,3]"]


@pytest.mark.parametrize("extra", [[], ["scheduler.name=andes", "engine.swap_space_gb=0.5"],
                                   ["replicas=4", "router.name=least-requests", "workload.arrival.rate_per_s=4"]])
def test_a_sessions_last_turns_own_ids_unkeyed_give_the_same_results(extra, monkeypatch):
    """A session's last turn counts only its previous turn's ids as shared (`SessionPlanner.is_last`):
    its new message's and answer's blocks are plain, and every result, step log and prefix hit
    included, is the same as with every id keyed (recompute preemptions of last turns included;
    a policy that swaps keys them whole from the first preemption on; among 4 replicas the
    previous turns' blocks sit at other replicas)."""
    own, own_blocks = run(SESSION_SETS + extra, monkeypatch, every_id=False, path=SESSIONS)
    every, every_blocks = run(SESSION_SETS + extra, monkeypatch, every_id=True, path=SESSIONS)
    assert outcome(own) == outcome(every)
    assert [r.num_cached_tokens_total for r in own.requests] == [r.num_cached_tokens_total for r in every.requests]
    assert_same_steps(own, every)
    assert own.prefix_hits == every.prefix_hits and own.prefix_hits[1] > 0
    last = {}
    for r in own.requests:
        if r.turn >= last.get(r.session_id, r).turn:
            last[r.session_id] = r
    marked = [r for r in last.values() if r.num_shared_hash_ids is not None]
    assert len(marked) > 50  # (the path ran: most sessions end at their planned turn count)
    if not extra:
        assert sum(r.num_preemptions for r in marked) > 20  # (last turns preempted, and hitting their own blocks again)
    if "scheduler.name=andes" in extra:  # (swapped or preempted last turns keyed every id from then on)
        assert sum(r.num_preemptions > 0 and r.num_shared_hash_ids is None for r in last.values()) > 20
    assert own_blocks < 0.95 * every_blocks  # (the last turns' new blocks: not registered)
