"""Finishes released in bulk (`Scheduler.finish_all`, `KVCacheManager.free_all`) leave the
scheduler and the KV cache as `finish` / `free` one request at a time do."""

from __future__ import annotations

import pytest

from factories import make_engine, make_request, serve
from servesim.workload.request import RequestState
from servesim.replica.kv_cache import KVCacheManager, block_keys


def _queue(kv: KVCacheManager) -> list:
    """The free queue's entries, comparable across two caches (a keyed entry by its slots)."""
    return [e if type(e) is int else (e[0], e[2], e[3]) if type(e) is list else (e.req_id, e.count) for e in kv._queue._q]


def _filled(order: list[int]) -> tuple[KVCacheManager, list]:
    """A cache holding requests 0..7 (prompt 13 + 9 i tokens; odd ones with prefix keys, two
    sharing their first block), freed later in `order`."""
    kv = KVCacheManager(200, 4)
    reqs = []
    for i in range(8):
        ids = (1000 + (i > 4), 2000 + i, 3000 + i) if i % 2 else ()
        req = make_request(i, 13 + 9 * i, 5, hash_ids=ids, hash_block_tokens=4)
        if ids:
            req.kv_block_keys = block_keys(req, 4)
        assert kv.allocate_slots(req, req.prompt_len, kv.get_computed_blocks(req))
        kv.cache_full_blocks(req, req.prompt_len)
        reqs.append(req)
    return kv, [reqs[i].id for i in order]


@pytest.mark.parametrize("order", [[0, 2, 4, 6, 1, 3, 5, 7], [7, 0, 2, 5, 4, 6, 1, 3], [6, 4, 2, 0]])
def test_free_all_leaves_the_queue_as_free_one_at_a_time(order):
    one, ids = _filled(order)
    for rid in ids:
        one.free(rid)
    bulk, ids = _filled(order)
    calls = []
    free = bulk.free
    bulk.free = lambda rid: (calls.append(rid), free(rid))
    bulk.free_all(ids)
    assert _queue(bulk) == _queue(one)
    assert bulk.num_free_blocks == one.num_free_blocks and set(bulk._held) == set(one._held)
    assert calls == [rid for rid in ids if rid % 2]  # the plain ones went in bulk, none freed one by one
    for kv in (one, bulk):  # the next allocations pop the same blocks
        assert kv.allocate_slots(make_request(99, 150, 4), 150)
    assert _queue(bulk) == _queue(one)


def test_finish_all_keeps_the_running_order_and_checks_membership():
    engine, sched, kv, _, _ = make_engine(num_blocks=64, block_size=4)
    reqs = [make_request(i, 5 + i, 3) for i in range(6)]
    for req in reqs:
        assert kv.allocate_slots(req, req.prompt_len)
        sched.running.append(req)
    running = sched.running
    sched.finish_all([reqs[4], reqs[1], reqs[2]], 0.0)
    assert sched.running is running and running == [reqs[0], reqs[3], reqs[5]]
    assert sorted(kv._held) == [0, 3, 5]
    with pytest.raises(ValueError, match="not running"):
        sched.finish_all([reqs[0], reqs[1]], 0.0)


def _autellix_run(monkeypatch, one_by_one: bool):
    """Autellix serving lone calls, programs and chat turns, several finishing per step, with
    its finishes released in bulk or (its `forget` not vouched for) one request at a time."""
    from servesim.replica.schedulers.autellix import AutellixScheduler

    if one_by_one:
        monkeypatch.setattr(AutellixScheduler, "batch_free_forget", None)
    engine, sched, kv, loop, _ = make_engine(num_blocks=40, block_size=4, scheduler="autellix", max_num_seqs=6,
                                             params={"base_quantum_s": 0.02, "preemption_mode": "recompute"})
    bulk = []
    free_all = kv.free_all
    monkeypatch.setattr(kv, "free_all", lambda ids: (bulk.append(len(ids)), free_all(ids)))
    kinds = [{}, {"program_id": 1}, {"session_id": 2}, {"program_id": 1}, {}, {"session_id": 3}]
    reqs = [make_request(i, 6 + 3 * (i % 4), 4 + 2 * (i % 3), arrival=0.004 * (i // 3), **kinds[i % 6])
            for i in range(18)]
    serve(engine, loop, reqs)
    tables = (sched.service_s, sched.wait_s, sched.call_service_s, sched._calls_held, sched._keys, sched._run_lazy)
    outcome = [(r.state, r.first_token_s, r.finish_s, r.num_preemptions, r.token_steps) for r in reqs]
    return outcome, repr(tables), sum(n for n in bulk if n > 1)


def test_autellix_finishes_in_bulk_as_one_at_a_time(monkeypatch):
    # its `forget` touches neither `running` nor the KV cache: releasing a step's finishes at
    # once and then forgetting each, in order, leaves everything as `finish` one by one does
    outcome, tables, bulk = _autellix_run(monkeypatch, one_by_one=False)
    assert bulk > 0  # (finishes went through the one pass)
    outcome_one, tables_one, bulk_one = _autellix_run(monkeypatch, one_by_one=True)
    assert bulk_one == 0
    assert outcome == outcome_one and tables == tables_one
    assert all(state is RequestState.FINISHED for state, *_ in outcome)


def test_a_forget_not_vouched_for_keeps_finishes_one_by_one():
    # a subclass that overrides `forget` is off the bulk path until it names its own: its
    # `forget` sees `running` as `finish` one request at a time leaves it
    from servesim.replica.schedulers.autellix import AutellixScheduler

    seen = []

    class Sub(AutellixScheduler):
        def forget(self, req):
            seen.append(len(self.running))
            super().forget(req)

    _, base, kv, _, _ = make_engine(num_blocks=64, block_size=4, scheduler="autellix")
    sched = Sub(base.params, base.config, kv, base.perf)
    reqs = [make_request(i, 5 + i, 3) for i in range(4)]
    for req in reqs:
        sched.add_request(req, 0.0)
    sched.schedule(0.0)
    assert sched.running == reqs
    sched.finish_all([reqs[2], reqs[0]], 0.0)
    assert seen == [3, 2] and sched.running == [reqs[1], reqs[3]]
