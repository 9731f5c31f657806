"""Conversations' next turns (requests with prefix keys) join the stretch in flight
(`replica/keyed_join.py`) instead of ending it, and the results are those of stepping."""

from __future__ import annotations

from pathlib import Path

import pytest

from servesim import load_scenario, simulate
from servesim.replica import fast_forward

from .helpers import assert_same_steps, keyed_joins, outcome, wrong_registrations

SESSIONS = str(Path(__file__).resolve().parents[2] / "examples" / "sessions.yaml")
# Busy conversations with short think times: next turns arrive while stretches holding other
# conversations' turns run (as in test_finish_notices.py)
BUSY = ["workload.num_requests=500", "workload.arrival.rate_per_s=2", "workload.sessions.think_time_s=1"]


def run_both(sets: list[str], monkeypatch) -> tuple:
    """(fast-forwarded, stepped) results, and the keyed joins of the fast run: how many, and
    how many of them hit their context in the prefix cache."""
    joins = keyed_joins(monkeypatch)
    fast = simulate(load_scenario(SESSIONS, sets), keep_steps=True)
    n = len(joins)
    slow = simulate(load_scenario(SESSIONS, sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert len(joins) == n  # (stepping joins nothing)
    return fast, slow, n, sum(1 for c in joins if c > 0)


@pytest.mark.parametrize("extra", [[], ["replicas=2", "router.name=least-requests", "workload.arrival.rate_per_s=4"]])
def test_next_turns_join_stretches_exactly(extra, monkeypatch):
    from servesim.replica.prefix_index import PrefixIndex

    extended = []  # the items of each join's registrations that extended the stretch's whole plan
    plan_appends = PrefixIndex.plan_appends

    def counted(self, items, base=None):
        planned = plan_appends(self, items, base)
        if base is not None and planned is not None:
            extended.append(len(items))
        return planned

    monkeypatch.setattr(PrefixIndex, "plan_appends", counted)
    fast, slow, joins, with_hits = run_both(BUSY + extra, monkeypatch)
    # (mostly the joiner's item alone: the joiners since the last plan, when a join's check was skipped)
    assert len(extended) > 0.5 * joins and sum(extended) < 1.5 * len(extended), (extended, joins)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    # (111 and 47 of 500 at 1 replica, 245 and 50 at 2: the rest arrive into a queue or a
    # prompt chunked by the token budget, or hit blocks the stretch's pops evict)
    assert joins > 0.15 * len(fast.requests), joins  # turns joined a stretch in flight
    assert with_hits > 0.05 * len(fast.requests), with_hits  # next turns, with their context cached


@pytest.mark.parametrize("scheduler", ["priority", "edf", "hygen"])
def test_keyed_policies_join_next_turns_exactly(scheduler, monkeypatch):
    """`priority` and `edf` (static keys: no request has a deadline) and `hygen` (online only)
    admit a lone waiting turn as vLLM does, and a next turn arriving last runs after every
    running request: their next turns join as vLLM's (`joins_last`)."""
    sets = BUSY + [f"scheduler.name={scheduler}"]
    fast, slow, joins, with_hits = run_both(sets, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert joins > 0.15 * len(fast.requests), joins
    assert with_hits > 0.05 * len(fast.requests), with_hits


@pytest.mark.parametrize("extra", [[], ["replicas=2", "router.name=least-requests", "workload.arrival.rate_per_s=4"]])
def test_andes_next_turns_join_exactly(extra, monkeypatch):
    """`andes` admits a lone pending turn with vLLM's calls while its knapsack does not run
    (the KV use under its threshold: `join_blocks`), and the turn runs last (`joins_last`):
    its next turns join as vLLM's (on main every one ended the stretch)."""
    fast, slow, joins, with_hits = run_both(BUSY + ["scheduler.name=andes"] + extra, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert fast.num_fast_forwarded_steps > 0.5 * sum(len(r.steps.start_s) for r in fast.replicas)  # (fast-forward ran)
    # (93 and 33 of 500 at 1 replica, 250 and 55 at 2)
    assert joins > 0.15 * len(fast.requests), joins
    assert with_hits > 0.05 * len(fast.requests), with_hits



@pytest.mark.parametrize("extra", [[], ["replicas=2", "router.name=least-requests", "workload.arrival.rate_per_s=4"]])
def test_fastswitch_next_turns_join_exactly(extra, monkeypatch):
    """`fastswitch` with one tenant held walks in arrival order: a next turn, the latest arrival
    and the only request waiting, is admitted after the running decodes by vLLM's `admit` and
    stays last (`joins_last`), so its next turns join as vLLM's (on main every one ended the
    stretch, whose finishes ended it too)."""
    fast, slow, joins, with_hits = run_both(BUSY + ["scheduler.name=fastswitch"] + extra, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert fast.summary()["swap"] == slow.summary()["swap"]
    assert fast.num_fast_forwarded_steps > 0.5 * sum(len(r.steps.start_s) for r in fast.replicas)  # (fast-forward ran)
    # (122 and 278 of 500)
    assert joins > 0.15 * len(fast.requests), joins
    assert with_hits > 0.05 * len(fast.requests), with_hits

def test_turns_join_stretches_priced_ahead_by_the_lean_path(monkeypatch):
    """Among several replicas a stretch is priced arrival gaps ahead by numpy chunks: a next
    turn cut into it rebuilds the scalar state of its join step (as `join_arrivals` does), is
    priced from the context sum and joins by `Stretch.join_one` and `price_on`, with stepping's
    results (main joined those turns by `Stretch.join`, none by `join_one`)."""
    from servesim.replica.stretch import Stretch

    lean = [0]
    join_one = Stretch.join_one

    def counted_one(self, *args, **kwargs):
        lean[0] += 1
        return join_one(self, *args, **kwargs)

    ahead = []  # per whole (unchunked) join into a stretch priced ahead: did it take join_one?
    keyed_join = fast_forward.keyed_join

    def counted(engine, st, now_s):
        priced_ahead = st._forms is not None and (st._f is None or st._priced != st.k)
        beside_rest = bool(st.rests) and st.rests[-1][0] >= st.k  # (a chain join: `Stretch.join`)
        before, runs = lean[0], len(st.prompt_runs)
        joined = keyed_join(engine, st, now_s)
        if joined and priced_ahead and len(st.prompt_runs) == runs and not beside_rest:
            ahead.append(lean[0] > before)
        return joined

    monkeypatch.setattr(Stretch, "join_one", counted_one)
    monkeypatch.setattr(fast_forward, "keyed_join", counted)
    sets = BUSY + ["replicas=4", "router.name=least-requests", "workload.arrival.rate_per_s=8"]
    fast = simulate(load_scenario(SESSIONS, sets), keep_steps=True)
    slow = simulate(load_scenario(SESSIONS, sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    # (a stretch launched at a replica among many is priced `join_ahead` steps by the scalar loop
    # since the forty-second round, so fewer are priced ahead by numpy: 25 such joins of 500 requests, 56 before)
    assert len(ahead) > 0.03 * len(fast.requests) and all(ahead), (len(ahead), sum(ahead))


def test_a_turn_joining_a_busy_replica_among_many_is_priced_a_few_steps_ahead(monkeypatch):
    """Among several replicas a next turn's lean join prices on from the scalar state as an
    arrival's join does: `Engine.join_ahead` steps by the scalar loop where many requests leave
    before the stretch's last step, not a numpy chunk to a horizon `lookahead` arrival gaps away
    (the next turn routed there cuts it a few dozen steps on); the results are stepping's (main
    passed no steps ahead: those joins priced a chunk, and the test fails there)."""
    from servesim.replica.engine import JOIN_AHEAD
    from servesim.replica.stretch import Stretch
    from servesim.replica.stretch_pricing import StretchPricing

    aheads, chunks = [], [0]
    price_on, chunk = Stretch.price_on, StretchPricing._chunk

    def counted_price_on(self, horizon, ahead=0):
        aheads.append(ahead)
        return price_on(self, horizon, ahead)

    def counted_chunk(self, steps):
        chunks[0] += 1
        return chunk(self, steps)

    joins = []  # per keyed join priced on by `price_on`: (its steps ahead, numpy chunks it priced)
    keyed_join = fast_forward.keyed_join

    def counted(engine, st, now_s):
        n, c = len(aheads), chunks[0]
        joined = keyed_join(engine, st, now_s)
        if joined and len(aheads) > n:
            joins.append((aheads[n], chunks[0] - c))
        return joined

    monkeypatch.setattr(Stretch, "price_on", counted_price_on)
    monkeypatch.setattr(StretchPricing, "_chunk", counted_chunk)
    monkeypatch.setattr(fast_forward, "keyed_join", counted)
    sets = BUSY + ["replicas=4", "router.name=least-requests", "workload.arrival.rate_per_s=8"]
    fast = simulate(load_scenario(SESSIONS, sets), keep_steps=True)
    slow = simulate(load_scenario(SESSIONS, sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert len(joins) > 0.1 * len(fast.requests), len(joins)
    assert all(a == JOIN_AHEAD for a, _ in joins), sorted({a for a, _ in joins})
    assert sum(1 for _, c in joins if c == 0) > 0.9 * len(joins), (len(joins), sum(c for _, c in joins))


def test_a_turn_that_would_not_run_last_ends_the_stretch(monkeypatch):
    """Mixed priorities: a turn whose key sorts before a running request's would run before it in
    the later steps (each `schedule` sorts the batch), so it ends the stretch instead of joining;
    the others still join, and the results are stepping's."""
    from servesim.replica.schedulers.priority import KeyedScheduler

    refused = []
    joins_last = KeyedScheduler.joins_last

    def counted(self, req, now_s):
        last = joins_last(self, req, now_s)
        if not last and not self.swapped:
            refused.append(req.id)
        return last

    monkeypatch.setattr(KeyedScheduler, "joins_last", counted)
    sets = BUSY + ["scheduler.name=priority", "workload.attributes.priorities={0: 1, 1: 1}"]
    fast, slow, joins, _ = run_both(sets, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert refused and joins > 0, (len(refused), joins)


@pytest.mark.parametrize("extra, busy", [([], True),
                                         (["replicas=2", "router.name=least-requests", "workload.arrival.rate_per_s=4"], True),
                                         (["scheduler.watermark=0.2"], True),
                                         (["engine.gpu_memory_utilization=0.3"], False)])
def test_vllm_v0_next_turns_join_as_prompt_only_steps_exactly(extra, busy, monkeypatch):
    """vLLM V0 (prefill-first) admits a lone waiting turn whole with its prefix hits, in a step
    that runs its prompt alone, the decodes stalled: the turn joins the keyed stretch as a
    prompt-only step (`Stretch.stall` with its cached context), the running requests' keyed
    registrations and the stretch's plan moved one step later (`_stall_keyed`). On main every
    such turn ended the stretch. Stepping's results, step log included; under KV pressure too,
    and with a 20 % watermark kept free."""
    from servesim.replica.stretch import Stretch

    stalls = []  # the cached tokens of each keyed prompt-only step
    stall = Stretch.stall

    def counted(self, joins, first_new, blocks, step_s, forms, block_size, cached=0):
        if cached:
            stalls.append(cached)
        return stall(self, joins, first_new, blocks, step_s, forms, block_size, cached)

    # A stretch's registrations when it is applied (the requests advanced): each keyed request's
    # up to the tokens it computed, and no block past them keyed (the kept plan's trim). Those
    # one step off leave the results the same here (nobody else hits a conversation's blocks
    # in that step), so they are read where they are made: the frame's moved entries and the
    # plan's tokens and caps each fail it when left unmoved (1,968 and 160 at 1 replica)
    wrong = wrong_registrations(monkeypatch)

    monkeypatch.setattr(Stretch, "stall", counted)
    fast, slow, joins, with_hits = run_both(BUSY + ["scheduler.name=vllm-v0"] + extra, monkeypatch)
    assert not wrong, wrong[:10]
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert sum(r.num_preemptions for r in fast.requests) == sum(r.num_preemptions for r in slow.requests)
    assert len(stalls) == with_hits and joins > 0, (len(stalls), with_hits, joins)  # turns joined as prompt-only steps
    if busy:  # (under KV pressure, 18 preemptions, most steps admit at a finish: 13 joins, none with a hit)
        steps = sum(len(r.steps.start_s) for r in fast.replicas)
        assert fast.num_fast_forwarded_steps > 0.5 * steps, (fast.num_fast_forwarded_steps, steps)  # (fast-forward ran)
        assert joins > 0.1 * len(fast.requests), joins
        assert with_hits > 0.02 * len(fast.requests), with_hits  # (their context hit in the cache)
    else:
        assert sum(r.num_preemptions for r in fast.requests) > 0


def test_joins_under_kv_pressure_are_exact(monkeypatch):
    """A small KV cache: the decodes' pops evict cached contexts, and stretches are limited by
    the blocks free (here the turns that could join hit none of their context)."""
    fast, slow, joins, with_hits = run_both(BUSY + ["engine.gpu_memory_utilization=0.25"], monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert sum(r.num_preemptions for r in fast.requests) == sum(r.num_preemptions for r in slow.requests)
    assert joins > 0, joins


def test_shared_system_prompt_blocks_held_by_others_are_exact(monkeypatch):
    """Conversations sharing a system prompt hit blocks other running requests hold: those turns
    end the stretch; the others join it."""
    fast, slow, joins, _ = run_both(BUSY + ["workload.shared_prefix={tokens: 512, groups: 2}"], monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert joins > 0, joins


def test_a_router_reading_prefix_caches_keeps_keyed_joins_off(monkeypatch):
    """dynamo-kv reads each replica's prefix cache at every dispatch: a join would let it read
    the cache before the stretch's earlier steps registered and evicted their blocks."""
    fast, slow, joins, _ = run_both(BUSY + ["router.name=dynamo-kv", "replicas=2"], monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert joins == 0


def test_head_evicts_reads_the_blocks_pops_would_take():
    """`FreeQueue.head_evicts`: plain blocks first, then a group's entry (its slots still
    carrying the entry's stamp), without changing the queue."""
    from servesim.replica.free_queue import FreeQueue
    from servesim.replica.prefix_groups import Group
    from servesim.replica.prefix_index import PrefixIndex

    q = FreeQueue(3, PrefixIndex())  # 3 plain blocks at the head
    g, other = Group(0), Group(0)
    g.register(0, 4)
    q.release(g, 0, 4)  # g's 4 blocks enter the queue after them
    assert not q.head_evicts(3, [g]) and q.head_evicts(4, [g]) and not q.head_evicts(7, [other])
    g.hit(1, 4, q.entries)  # 3 of them leave the queue (the entry counts 1 live block)
    assert q.head_evicts(4, [g]) and not q.head_evicts(3, [g])
    g.hit(0, 1, q.entries)
    assert not q.head_evicts(100, [g])
    q.pop(3)  # (the walks changed nothing: this takes the plain run; g's entry holds none of its blocks)
    assert not q.head_evicts(1, [g])

