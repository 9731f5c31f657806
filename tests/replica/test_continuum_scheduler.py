"""Continuum: TTL pins of finished agent calls, program-level FCFS, and program completion times."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.core.loop import PRIO_ARRIVAL
from servesim.metrics.sections import SectionInput
from servesim.metrics.sections.programs import completion_times_s, section
from servesim.replica.schedulers.continuum import ProgramQueue
from servesim.workload.request import RequestState
from tests.factories import make_engine, make_request

H = 16  # hash block tokens = KV block size in these tests


def ids(program: int, tokens: int) -> tuple[int, ...]:
    """Chained prefix ids of a program's context: the same first ids for every call."""
    return tuple(range(program * 10_000, program * 10_000 + tokens // H))


def drive(engine, loop, first_calls, follow_up=None, extra=()):
    """Run; `follow_up(req, t)` returns the next call of a finished one (or None)."""
    def on_done(req, t):
        nxt = follow_up(req, t) if follow_up else None
        if nxt is not None:
            loop.schedule(nxt.arrival_s, lambda tt, r: engine.add_request(r, tt), nxt, PRIO_ARRIVAL)

    engine.on_done = on_done
    for r in list(first_calls) + list(extra):
        loop.schedule(r.arrival_s, lambda t, req: engine.add_request(req, t), r, PRIO_ARRIVAL)
    loop.run()
    engine.drain(loop.now_s)


def test_finished_call_is_pinned_until_ttl_expiry():
    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="continuum")
    call = make_request(0, 64, 16, program_id=1, hash_ids=ids(1, 80), hash_block_tokens=H)
    drive(engine, loop, [call])
    assert call.state == RequestState.FINISHED
    # nothing else happens: the engine wakes up at the TTL timer and releases the pin
    assert loop.now_s == pytest.approx(call.finish_s + 2.0)
    assert not sched.pins and kv.num_free_blocks == 100


def test_last_call_is_not_pinned():
    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="continuum")
    call = make_request(0, 64, 16, program_id=1, extra={"last_call": True})
    drive(engine, loop, [call])
    assert loop.now_s == call.finish_s


def agent_with_filler(scheduler: str):
    engine, sched, kv, loop, done = make_engine(num_blocks=30, scheduler=scheduler, fast_forward=False)
    long = make_request(0, 64, 120)
    call0 = make_request(1, 64, 16, program_id=7, hash_ids=ids(7, 80), hash_block_tokens=H)
    filler = make_request(2, 320, 10, arrival=0.2)  # 20 blocks: fits only by evicting call 0's KV
    calls = []

    def follow_up(req, t):
        if req is call0:  # a 0.5 s tool call, then the next call extends the context
            nxt = make_request(3, 100, 10, arrival=t + 0.5, program_id=7, call_index=1, hash_ids=ids(7, 110),
                               hash_block_tokens=H)
            calls.append(nxt)
            return nxt
        return None

    drive(engine, loop, [long, call0], follow_up, extra=[filler])
    kv.check_all_free()
    return call0, calls[0], filler


def test_pin_keeps_the_prefix_for_the_next_call_under_pressure():
    call0, call1, filler = agent_with_filler("continuum")
    assert call1.num_cached_tokens == 64  # call 0's four full blocks survived on the GPU
    # the newcomer's first chunk fits, but as the newest job it is the preemption victim until
    # the agent's next call got through
    assert filler.first_token_s > call1.first_token_s
    call0, call1, filler = agent_with_filler("vllm")
    assert call1.num_cached_tokens < 64  # LRU reuse evicted them for the newcomer
    assert filler.first_token_s < call1.first_token_s


def test_program_level_fcfs_order_and_victim():
    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="continuum")
    old = make_request(0, 10, 1, arrival=0.0, program_id=1)
    young = make_request(1, 10, 1, arrival=1.0, program_id=2)
    old_next = make_request(2, 10, 1, arrival=2.0, program_id=1, call_index=1)
    for r in (old, young):
        sched.add_request(r, r.arrival_s)
    sched.waiting.pop(), sched.waiting.pop()
    for r in (young, old_next):
        sched.add_request(r, r.arrival_s)
    assert list(sched.waiting) == [old_next, young]  # program 1 started first
    sched.running = [old_next, young]
    assert sched.pick_victim() is young
    sched.pins[("program", 2)] = (99, 5.0)  # a job holding a pin goes first
    assert sched.waiting.peek() is young
    sched.pins.clear()


def agent_programs(scheduler: str, seed: int, n_prog: int = 100, calls: int = 4, rate: float = 4.0):
    rng = np.random.default_rng(seed)
    engine, sched, kv, loop, done = make_engine(num_blocks=1000, scheduler=scheduler, max_num_batched_tokens=512,
                                                max_num_seqs=32)
    reqs = []

    def new(pid, call, prompt, t):
        out = int(rng.integers(20, 80))
        r = make_request(len(reqs), prompt, out, t, program_id=pid, call_index=call,
                         hash_ids=ids(pid, prompt + out), hash_block_tokens=H)
        reqs.append(r)
        return r

    def follow_up(req, t):
        if req.call_index + 1 < calls and req.state == RequestState.FINISHED:
            return new(req.program_id, req.call_index + 1, req.prompt_len + req.output_len + int(rng.integers(50, 150)),
                       t + 1.0)
        return None

    t, first = 0.0, []
    for p in range(n_prog):
        t += rng.exponential(1 / rate)
        first.append(new(p, 0, int(rng.integers(300, 800)), t))
    drive(engine, loop, first, follow_up)
    kv.check_all_free()
    done_mask = np.array([r.state == RequestState.FINISHED for r in reqs])
    times, incomplete = completion_times_s(np.array([r.program_id for r in reqs]), np.array([r.arrival_s for r in reqs]),
                                           np.array([r.finish_s for r in reqs]), done_mask)
    assert incomplete == 0 and len(times) == n_prog
    return times.mean()


@pytest.mark.parametrize("seed", [0, 1])
def test_continuum_lowers_mean_program_completion_time(seed):
    assert agent_programs("continuum", seed) < 0.85 * agent_programs("vllm", seed)


def test_program_completion_times_section():
    reqs = []
    for i, (pid, arr, fin, state) in enumerate([(1, 0.0, 2.0, "FINISHED"), (1, 3.0, 5.0, "FINISHED"),
                                                (2, 1.0, 2.0, "FINISHED"), (3, 1.0, 4.0, "DROPPED")]):
        r = make_request(i, 10, 2, arr, program_id=pid)
        r.finish_s, r.state = fin, RequestState[state]
        reqs.append(r)
    out = section(SectionInput(reqs, np.empty(0), {}))
    assert out["num_programs"] == 3 and out["num_incomplete"] == 1
    assert out["mean_completion_s"] == pytest.approx((5.0 + 1.0) / 2)
    assert section(SectionInput([make_request(9, 1, 1)], np.empty(0), {})) is None


def queued_calls(seed: int, n: int, last_arrival: int, programs: int, every: int):
    """(continuum's waiting queue, the `n` calls queued in it): arrivals drawn up to
    `last_arrival`, all but every `every`-th call in one of `programs` programs."""
    sched = make_engine(num_blocks=100, scheduler="continuum")[1]
    rng = np.random.default_rng(seed)
    reqs = [make_request(i, 10, 1, arrival=float(rng.integers(0, last_arrival)),
                         program_id=int(rng.integers(0, programs)) if i % every else None) for i in range(n)]
    for r in reqs:
        sched.add_request(r, r.arrival_s)
    return sched.waiting, reqs


def test_waiting_calls_iterate_in_pop_order_without_pins():
    # with no pin the queue is read lazily from its heap (an admission walk reads a few of
    # thousands waiting): the order must be the one `pop` takes, removed calls skipped
    queue, reqs = queued_calls(5, 200, 40, 6, 3)
    for r in reqs[::4]:
        queue.remove(r)
    for r in reqs[::8]:
        queue.prepend(r)  # (re-entering by its program's order: a second heap entry, the first dead)
    listed = list(queue)
    assert len(listed) == len(queue) == 200 - 50 + 25
    assert listed == sorted(listed, key=queue._order)
    assert listed == [queue.pop() for _ in range(len(listed))]


def test_waiting_heap_sheds_the_entries_of_calls_gone():
    """Removed calls leave dead heap entries (lazy deletion), which every walk of the queue reads
    (each arrival's `arrivals_join` walks it whole): once they outnumber the live ones the heap
    is rebuilt from those, in the same order, and a walk in progress reads on from its own."""
    queue, reqs = queued_calls(8, 300, 60, 9, 2)
    walk = iter(queue)
    first = next(walk)  # (a walk in progress when the heap is rebuilt)
    gone = [r for r in reqs if r is not first][:280]
    for r in gone:
        queue.remove(r)
    assert len(queue) == 20 and len(queue._heap) <= 2 * len(queue) + 4  # (rebuilt: without, 300 entries)
    listed = list(queue)
    assert listed[0] is first and list(walk) == listed[1:]
    assert listed == sorted(listed, key=queue._order)
    assert listed == [queue.pop() for _ in range(len(listed))]


def test_standalone_calls_queue_in_program_order_until_a_job_arrives():
    """While every call is standalone the queue is a deque kept in (arrival, id) order (the
    program queue's order then; C-level length and iteration); a preempted call re-enters at
    its place, not at the front as vLLM's. The first job's call turns it into the program
    queue, holding the same calls in the same order."""
    sched = make_engine(num_blocks=100, scheduler="continuum")[1]
    rng = np.random.default_rng(3)
    reqs = [make_request(i, 10, 1, arrival=float(rng.integers(0, 30))) for i in range(60)]  # (out of order, ties)
    for r in reqs:
        sched.add_request(r, r.arrival_s)
    for r in reqs[::5]:
        sched.waiting.remove(r)
    for r in reqs[::10]:
        sched.waiting.prepend(r)  # (preempted: back at its arrival's place)
    by_arrival = sorted([r for i, r in enumerate(reqs) if i % 5 or not i % 10], key=lambda r: (r.arrival_s, r.id))
    assert type(sched.waiting) is not ProgramQueue and list(sched.waiting) == by_arrival
    call = make_request(60, 10, 1, arrival=12.5, program_id=4)
    sched.add_request(call, call.arrival_s)
    queue = sched.waiting
    assert type(queue) is ProgramQueue and len(queue) == len(by_arrival) + 1
    expected = sorted(by_arrival + [call], key=lambda r: (r.arrival_s, r.id))
    assert list(queue) == expected == [queue.pop() for _ in range(len(expected))]


def test_a_job_call_handed_over_pins_and_orders_the_queue():
    """A job's call that comes in handed over from another replica (a decode hand-off, a
    migration: `add_transferred`, not `add_request`) turns the queue into the program queue
    too, and its finish pins its blocks, beside a standalone call whose finish frees them."""
    sched, kv = make_engine(num_blocks=100, scheduler="continuum")[1:3]
    alone, call = make_request(0, 32, 4), make_request(1, 32, 4, program_id=9)
    sched.add_request(alone, 0.0)
    assert type(sched.waiting) is not ProgramQueue
    for req in (alone, call):
        kv.allocate_slots(req, req.num_tokens)
    sched.waiting.pop()
    sched.running.append(alone)
    sched.add_transferred(call, 0.0)
    assert type(sched.waiting) is ProgramQueue
    sched.finish_all([alone, call], 1.0)
    assert not sched.running and list(sched.pins) == [("program", 9)]
    assert kv.num_blocks_of(call.id) == 2 and kv.num_free_blocks == 98


def test_job_checks_read_ids_as_jobs_would():
    """`joins_last` and `_jobs_apart` read the running calls' program and session ids in C; a
    program's call carrying a session id is the program's job, not the session's, so it neither
    keeps that session's next turn out nor counts as its pin's call."""
    sched = make_engine(num_blocks=200, scheduler="continuum")[1]
    a, b, c = make_request(0, 32, 20), make_request(1, 32, 20), make_request(2, 32, 20)
    a.session_id, b.session_id = 5, 6
    c.program_id, c.session_id = 9, 5  # (a program's call: its job is program 9)
    sched.running = [a, b, c]
    turn = make_request(3, 32, 20)
    turn.session_id = 6
    assert sched._jobs_apart() is True  # (sessions 5, 6 and program 9)
    assert sched.joins_last(turn, 0.0) is False  # (session 6's call b runs)
    sched.running = [a, c]
    assert sched.joins_last(turn, 0.0) is True
    turn.session_id = 5
    assert sched.joins_last(turn, 0.0) is False  # (a runs; c's session id alone would not keep it out)
    sched.running = [c]
    assert sched.joins_last(turn, 0.0) is True
    sched.pins[("session", 5)] = (99, 5.0)  # (c's session id is a pinned session's: c's job is its program)
    assert sched._jobs_apart() is True
    assert sched.joins_last(turn, 0.0) is False  # (its own session holds a pin)
    sched.running = [a, c]
    assert sched._jobs_apart() is False  # (a's session holds a pin)
    sched.pins = {("program", 9): (98, 5.0)}
    sched.running = [b, c]
    assert sched._jobs_apart() is False  # (c's program holds a pin)
    b.session_id = None
    sched.pins = {}
    sched.running = [a, b, make_request(4, 32, 20)]  # (standalone calls have no job)
    assert sched._jobs_apart() is True
    twin = make_request(5, 32, 20)
    twin.session_id = 5
    sched.running = [a, b, twin]  # (two calls of session 5)
    assert sched._jobs_apart() is False
