"""Scheduler.remove: a request leaves whichever queue holds it and its KV is freed."""

from __future__ import annotations

from tests.factories import make_engine, make_request


def test_remove_running_request_frees_its_blocks():
    engine, sched, kv, loop, done = make_engine(num_blocks=20)
    a, b = make_request(0, 40, 50), make_request(1, 40, 50)
    engine.add_request(a, 0.0)
    engine.add_request(b, 0.0)
    loop.run(until_s=0.05)  # both prefilled, decoding
    assert sched.num_running == 2 and kv.num_blocks_of(a.id) == 3
    free_before = kv.num_free_blocks
    assert sched.remove(a, loop.now_s) is True
    assert sched.running == [b]
    assert kv.num_blocks_of(a.id) == 0 and kv.num_free_blocks == free_before + 3
    assert sched.remove(a, loop.now_s) is False  # held by no queue any more


def test_remove_waiting_request():
    engine, sched, kv, loop, done = make_engine(num_blocks=20, max_num_seqs=1)
    a, b = make_request(0, 40, 50), make_request(1, 40, 50)
    engine.add_request(a, 0.0)
    engine.add_request(b, 0.0)
    loop.run(until_s=0.05)
    assert list(sched.waiting) == [b]
    assert sched.remove(b, loop.now_s) is True
    assert sched.num_waiting == 0 and sched.running == [a]
    loop.run()
    assert done == [a] and kv.num_free_blocks == 20
