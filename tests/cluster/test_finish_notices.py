"""Closed-loop workloads with prefix keys: stretches go through finishes, each finish told at
its time (`replica/finish_notices.py`), and the results are those of stepping one by one."""

from __future__ import annotations

import pytest

from servesim import load_scenario, simulate
from servesim.replica.block_keys import BlockKeys
from servesim.replica.fast_forward import FastForwarding
from servesim.replica.recent_keys import RecentKeys
from servesim.replica.replica import Replica

from .helpers import (SESSIONS, assert_same_steps, count_tells, outcome, reads_everything,  # noqa: F401  (fixture)
                      sessions_both)

# Short think times and a busy replica: next turns arrive while stretches holding other
# conversations' turns run, and several turns finish inside each stretch.
BUSY = ["workload.num_requests=500", "workload.arrival.rate_per_s=2", "workload.sessions.think_time_s=1"]


def test_sessions_go_through_finishes_exactly(monkeypatch):
    fast, slow, told = sessions_both(BUSY, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert fast.summary()["prefix_cache_hit_rate"] == slow.summary()["prefix_cache_hit_rate"] > 0.2
    assert sum(r.num_cached_tokens for r in fast.requests) > 0  # next turns hit their context
    assert told > 0.4 * len(fast.requests), told  # finishes inside stretches, not at their ends
    assert fast.num_fast_forwarded_steps > 0.6 * len(fast.steps)  # (68 %: each arrival cuts one)


@pytest.mark.parametrize("extra", [["workload.attributes.tenants={a: 0.5, b: 0.5}"],
                                   ["workload.attributes.tenants={a: 0.6, b: 0.3, c: 0.1}",
                                    "scheduler.priority_update_interval=5"]])
def test_fastswitch_goes_through_finishes_with_several_tenants_exactly(extra, monkeypatch):
    """`fastswitch`'s arrivals read its tenants' held counts, which a finish lowers, only while
    counting is deferred (never inside a stretch through finishes) or in the lift of a join with
    one tenant held: its follow-ups are told inside stretches, tenants coming back from idle
    lifted as stepping lifts them (on main it stopped at every finish: none told)."""
    fast, slow, told = sessions_both(BUSY + ["scheduler.name=fastswitch"] + extra, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert fast.summary()["swap"] == slow.summary()["swap"]
    assert slow.summary()["swap"]["num_copies"] > 0  # (the tenants' counters order swaps out)
    assert told > 0.3 * len(fast.requests), told  # (241 and 210 of 500)
    assert fast.num_fast_forwarded_steps > 0.5 * len(fast.steps)

def test_a_follow_up_without_think_time_ends_the_stretch_at_its_parents_finish(monkeypatch):
    """Stepping starts the next step before a follow-up made at a finish arrives (same time):
    the stretch ends at that finish rather than being cut there."""
    sets = BUSY + ["workload.sessions.think_time_s=0", "workload.sessions.think_time_dist=fixed"]
    fast, slow, told = sessions_both(sets, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert told > 0.2 * len(fast.requests), told


def test_shared_blocks_keep_a_stretch_from_going_through_their_finish(monkeypatch):
    """Conversations sharing a system prompt hold its blocks together: a finish inside a
    stretch frees only the blocks whose last holder it is (`KVCacheManager.blocks_freed`)."""
    sets = BUSY + ["workload.shared_prefix={tokens: 512, groups: 2}"]
    fast, slow, told = sessions_both(sets, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert told > 0.3 * len(fast.requests), told  # (they go through their finishes, shared blocks or not)


@pytest.mark.parametrize("replicas", [2, 4])
def test_replicas_with_a_state_reading_router_are_exact(replicas, reads_everything, monkeypatch):
    """With and without prefix caching the replicas' stretches go through finishes and tell
    them early, and the results are stepping's."""
    sets = BUSY + [f"replicas={replicas}", f"router.name={reads_everything}", "workload.arrival.rate_per_s=4"]
    fast, slow, told = sessions_both(sets + ["engine.enable_prefix_caching=false"], monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert len({r.replica for r in fast.requests}) == replicas
    assert told > 0.1 * len(fast.requests), told
    fast, slow, told = sessions_both(sets, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert sum(r.num_cached_tokens for r in fast.requests) > 0
    assert told > 0.1 * len(fast.requests), told  # (keyed: `blocks_freed` counts each finish's blocks)


@pytest.mark.parametrize("extra", [["router.name=dynamo-kv", "replicas=4"], ["kv_store.enabled=true"]])
def test_prefix_caches_read_from_outside_are_exact(extra, monkeypatch):
    """A cache-aware router or a KV store reads the replicas' prefix caches at each dispatch,
    and finds what stepping's would: a stretch ends where it tells a finish with prefix keys
    (its last blocks registered before the next turn is routed), and a read inside one first
    takes from the free queue the blocks its steps so far took (`Stretch.take_ahead`: stepping's
    allocations had evicted them; one read in 500 found them still cached before)."""
    reads = read_caches(monkeypatch)
    fast, slow, told = sessions_both(BUSY + extra, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert reads[:len(reads) // 2] == reads[len(reads) // 2:]  # (the fast run's reads, then stepping's)
    assert told > 0.1 * len(fast.requests), told  # (finishes inside stretches, each ending its own)
    assert fast.num_fast_forwarded_steps > 0.5 * len(fast.steps)


@pytest.mark.parametrize("scheduler", ["sarathi", "vtc", "vllm"])
def test_a_cache_aware_router_reads_a_finished_turns_blocks_as_stepping(scheduler, monkeypatch):
    """Where a router reads the prefix caches, a stretch that processed a turn's finish late
    registered its last blocks only at its own end, after the next turn, made at the finish's
    time, had been routed by a read that missed them (486 of 489 blocks at the first such
    read). Sarathi's runs then differed from stepping's; vLLM's and vtc's reads did, while their
    decisions happened not to."""
    reads = read_caches(monkeypatch)
    sets = ["workload.num_requests=400", "workload.attributes.tenants={a: 1, b: 1, c: 1}",
            f"scheduler.name={scheduler}", "replicas=4", "router.name=dynamo-kv"]
    fast, slow, told = sessions_both(sets, monkeypatch)
    assert reads[:len(reads) // 2] == reads[len(reads) // 2:]
    assert outcome(fast) == outcome(slow)
    assert fast.num_fast_forwarded_steps > 0.9 * len(fast.steps)


def test_finishes_of_one_step_go_in_the_policys_order(monkeypatch):
    """Two turns finishing in the same step of a stretch make their next turns in the order the
    policy ran them there, as stepping's finish order: FastSwitch's walk (three tenants) listed
    a prompt admitted in step 0 before a decode, whose finishes then came the other way round in
    the stretch (decodes before prompts), and the next turns swapped ids, lengths and replicas
    (the run differed from stepping's from 132 s on)."""
    ranked = []
    apply = FastForwarding._apply_stretch

    def seen(self, st):
        done = apply(self, st)
        if st.rank is not None and len({r.finish_s for r in done}) < len(done):
            ranked.append([r.id for r in done])
        return done

    monkeypatch.setattr(FastForwarding, "_apply_stretch", seen)
    sets = ["workload.num_requests=400", "workload.attributes.tenants={a: 1, b: 1, c: 1}",
            "scheduler.name=fastswitch", "replicas=3", "router.name=sglang-cache-aware"]
    fast, slow, _ = sessions_both(sets, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert ranked  # (finishes of one step ordered by the policy's walk, not the batch's list)


def test_autellix_steps_a_last_step_two_of_its_calls_leave(monkeypatch):
    """Autellix sorts its batch by level at every step, and service moves the levels: a stretch
    ending at its first departure where two calls leave together now ends a step earlier, so
    that step's `schedule` orders their finishes (three sessions' turns finished in one 2-step
    stretch, in its first step's order, and their next turns swapped ids; found with a
    scale-to-zero autoscaler, where the run differed from stepping from 31 s on)."""
    sets = ["workload.num_requests=300", "scheduler.name=autellix", "autoscaler.name=kpa", "autoscaler.min_replicas=0",
            "autoscaler.max_replicas=2", "autoscaler.container_concurrency_target_default=4"]
    fast, slow, _ = sessions_both(sets, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert fast.num_fast_forwarded_steps > 0.9 * len(fast.steps)


def read_caches(monkeypatch) -> list[tuple]:
    """Every read of a replica's prefix cache from outside in the runs that follow: (time,
    request, replica, blocks found)."""
    reads = []
    cached_blocks = Replica.cached_blocks

    def logged(self, req):
        n = cached_blocks(self, req)
        reads.append((self.engine.loop.now_s, req.id, self.index, n))
        return n

    monkeypatch.setattr(Replica, "cached_blocks", logged)
    return reads


@pytest.mark.parametrize("prefix_caching", ["true", "false"])
def test_no_arrival_joins_a_stretch_before_a_finish_at_its_last_step_is_told(prefix_caching):
    """A stretch cut by an arrival whose last step is a call's finish: the call's next one comes
    at once (no think time) and ends the stretch at that step, so the arrival stays waiting for
    stepping's `schedule` there. (A join at the next step was cut away with it, leaving the
    arrival admitted with nothing computed: the running pass then capped its prompt by
    `long_prefill_token_threshold`, where BatchLLM's admission runs a first prompt whole.)"""
    from pathlib import Path

    from servesim import load_scenario, simulate

    example = Path(__file__).resolve().parents[2] / "examples" / "agent-programs.yaml"
    sets = ["workload.num_requests=300", "workload.arrival.rate_per_s=5", "scheduler.name=batchllm",
            "engine.long_prefill_token_threshold=256", f"engine.enable_prefix_caching={prefix_caching}"]
    fast, slow = (simulate(load_scenario(example, sets + [f"engine.fast_forward={ff}"]),
                           keep_steps=True) for ff in ("true", "false"))
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert fast.num_fast_forwarded_steps > 0.5 * len(fast.steps)


@pytest.mark.parametrize("think_s", [1, 0])
@pytest.mark.parametrize("scheduler, joins, least", [("vllm", "keyed_join", 4), ("vtc", "stretch_join", 3)])
def test_arrivals_join_after_finishes_at_the_last_step_are_told(think_s, scheduler, joins, least, monkeypatch):
    """A turn arriving where requests leave at the stretch's last step (their finishes processed
    at its end, with no notice of their own) joins after they are told, as stepping's step end
    tells them before the next `schedule` (before, the stretch ended there), unless a follow-up
    they make arrives at once, which still ends it: vllm's turns join by `keyed_join`, vtc's
    (no prefix look-ups) by `join_arrivals`."""
    import importlib

    told, refused = count_tells(monkeypatch, importlib.import_module(f"servesim.replica.{joins}"))
    sets = [*BUSY[:2], f"workload.sessions.think_time_s={think_s}", f"scheduler.name={scheduler}"]
    fast, slow, _ = sessions_both(sets, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert len(told) >= least, told  # (vllm: 11 with a second's think time, 4 without; vtc: 7 and 3)
    if think_s:
        assert not refused, refused
    else:
        assert len(refused) >= 2, refused  # (vllm: 3 of those 4 make a follow-up at once; vtc: 2 of 3)


def test_a_turn_finished_inside_a_stretch_offers_its_keys_to_its_next_turn(monkeypatch):
    """Among several replicas a next turn often reaches another replica before the stretch of its
    previous turn is applied (which frees its blocks and keeps its keys): the finish offers the
    keys when it is told (`RecentKeys.offer`), and the next turn builds its own from a copy.
    The results are those without the offers (the keys are the same ints). The ids are given as
    a trace gives them (tuples: a generated conversation's ranges are registered by range, and
    no list is built to offer)."""
    sets = BUSY + ["replicas=4"]
    init = BlockKeys.__init__
    monkeypatch.setattr(BlockKeys, "__init__", lambda self, ids, *a: init(self, tuple(ids), *a))
    copied = []
    reuse_into = RecentKeys.reuse_into

    def counted(self, keys):
        entry = self._by_first.get(keys.first_id())
        reuse_into(self, keys)
        if entry is not None and len(entry) == 4 and keys.first_id() not in self._by_first:
            copied.append(keys)

    monkeypatch.setattr(RecentKeys, "reuse_into", counted)
    offered = simulate(load_scenario(SESSIONS, sets))
    assert len(copied) > 0.2 * len(offered.requests), len(copied)  # next turns built from offered keys (234 of 500)
    monkeypatch.setattr(RecentKeys, "offer", lambda self, keys: None)
    plain = simulate(load_scenario(SESSIONS, sets))
    assert outcome(offered) == outcome(plain)
    assert offered.summary()["prefix_cache_hit_rate"] == plain.summary()["prefix_cache_hit_rate"] > 0.1
