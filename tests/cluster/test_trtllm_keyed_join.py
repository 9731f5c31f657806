"""TensorRT-LLM's next turns join the stretch in flight (`replica/keyed_join.py`): under
GUARANTEED_NO_EVICT its `schedule` keeps every generation request, takes a lone waiting turn
whose whole reservation fits the room they leave, and starts its context whole (hits taken off)
when it fits the tokens they leave, appended last to `running`. `joins_last` checks the room on
the stretch's unapplied state (at most step s's); a turn it refuses, or one the token budget
would hold or chunk, ends the stretch as before. The results, step log included, are stepping's;
before this every next turn ended the stretch (none joined). A turn the token budget holds (its
context whole does not fit what the generation requests leave) stays held through decode
stretches unless a running request could raise its hits (`_hits_hold`)."""

from __future__ import annotations

import pytest

from servesim import load_scenario, simulate
from servesim.replica.block_keys import block_keys
from servesim.replica.prefix_index import Hits
from servesim.replica.schedulers.trtllm import TRTLLMScheduler
from tests.factories import make_engine, make_request

from .helpers import assert_same_steps, joins_both, outcome
from .test_keyed_join import BUSY, SESSIONS

TRTLLM = BUSY + ["scheduler.name=trtllm"]
TWO = ["replicas=2", "router.name=least-requests", "workload.arrival.rate_per_s=4"]


def run_both(sets: list[str], monkeypatch) -> tuple:
    return joins_both(sets, monkeypatch, TRTLLMScheduler)


@pytest.mark.parametrize("extra", [[], TWO])
def test_trtllm_next_turns_join_exactly(extra, monkeypatch):
    fast, slow, joins, refused = run_both(TRTLLM + extra, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert fast.num_fast_forwarded_steps > 0.5 * sum(len(r.steps.start_s) for r in fast.replicas)  # (fast-forward ran)
    # (244 and 103 of 500 at 1 replica, 303 and 63 at 2; none refused on the room)
    assert len(joins) > 0.15 * len(fast.requests), len(joins)
    assert sum(1 for c in joins if c > 0) > 0.05 * len(fast.requests)  # next turns, their context cached
    assert not refused


def test_trtllm_turns_over_the_reservation_room_end_the_stretch(monkeypatch):
    """A small KV cache: the running requests' reservations (prompt + max new tokens) leave too
    little room for some turns, which stepping then holds or admits after finishes; the others
    join, and the results are stepping's (joined without the room check, they are not)."""
    sets = TRTLLM + ["engine.gpu_memory_utilization=0.27", "workload.arrival.rate_per_s=1"]
    fast, slow, joins, refused = run_both(sets, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    # (11 joined and 5 refused: under this pressure most turns arrive into a queue)
    assert len(refused) >= 3 and len(joins) >= 5, (len(refused), len(joins))


@pytest.mark.parametrize("extra", [["scheduler.capacity_scheduler_policy=MAX_UTILIZATION"],
                                   ["scheduler.batch_wait_timeout_iters=2"],
                                   ["scheduler.enable_chunked_context=true"]])
def test_trtllm_turns_do_not_join_where_its_admission_differs(extra, monkeypatch):
    """MAX_UTILIZATION's capacity pass, batch waiting and chunked context (a context in pieces
    sized to block multiples) are not what a join plays: every turn ends the stretch, as before."""
    fast, slow, joins, refused = run_both(TRTLLM + extra, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert not joins and refused


def test_trtllm_token_budget_holds_turns_that_then_step(monkeypatch):
    """A small `max_num_tokens`: a context the tokens left by the generation requests cannot take
    whole waits (chunked context off), which a join does not play (`max_join_chunks` 0); the
    turns that fit join."""
    fast, slow, joins, _ = run_both(TRTLLM + ["scheduler.max_num_tokens=600"], monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert 0 < len(joins) < 0.15 * len(fast.requests), len(joins)  # (67 of 500, against 244 at 8,192)


def test_trtllm_turns_held_by_the_token_budget_repeat_decode_steps(monkeypatch):
    """Busier conversations: turns whose context (past its hits) does not fit the tokens the
    generation requests leave wait, with prefix keys, through decode-only stretches until a
    finish (before, each of those steps was stepped); the results are stepping's."""
    held = []
    fast_forward = TRTLLMScheduler.fast_forward

    def counted(self, output):
        ff = fast_forward(self, output)
        if ff.repeat and self.waiting and self.waiting.peek().kv_block_keys and not self._capacity_blocked:
            held.append(self.waiting.peek().id)  # (held by the tokens, not by the capacity pass)
        return ff

    monkeypatch.setattr(TRTLLMScheduler, "fast_forward", counted)
    sets = TRTLLM + ["workload.arrival.rate_per_s=4"]
    fast = simulate(load_scenario(SESSIONS, sets), keep_steps=True)
    n = len(held)
    slow = simulate(load_scenario(SESSIONS, sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert n >= 10, n  # (stretches planned with a keyed turn held by the tokens: 31; 0 before)


def test_a_held_turn_whose_next_block_a_running_request_shares_is_not_held():
    """`_hits_hold`: a running request whose hash ids share the held turn's first block not hit
    could register it by a decode (a continuation), raising the turn's hits: not held; no keys,
    or no running request sharing it: held."""
    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="trtllm")
    turn = make_request(1, 80, 4, hash_ids=(11, 12, 13, 14, 15), hash_block_tokens=16)
    turn.kv_block_keys = block_keys(turn, 16)
    hits = Hits(num_keyed=2)  # (blocks 0, 1 hit: its first block not hit is block 2, hash id 13)
    other = make_request(2, 40, 40, hash_ids=(21, 22), hash_block_tokens=16)
    sched.running = [other]
    assert sched._hits_hold(turn, hits)
    sched.running = [other, make_request(3, 40, 40, hash_ids=(11, 12, 13), hash_block_tokens=16)]
    assert not sched._hits_hold(turn, hits)
    assert sched._hits_hold(turn, Hits(num_keyed=5))  # (every key hit: none to gain)
    assert sched._hits_hold(make_request(4, 80, 4), Hits())  # (no keys)
