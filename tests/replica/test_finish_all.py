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


# ---- every policy whose `forget` is vouched for (`batch_free_forget`) -----------------------

# Parameters that give a policy's tables something to hold (edf: deadlines) or match its use above.
_PARAMS = {"edf": {"default_ttft_s": 0.05, "default_tpot_s": 0.02}, "autellix": {"preemption_mode": "recompute"}}


def _vouched() -> list[str]:
    """Registered policies whose finishes take the bulk path of `finish_all`: this class's
    `finish` and a `forget` of their own named `batch_free_forget`."""
    from servesim.replica.schedulers import available, get_scheduler
    from servesim.replica.schedulers.base import Scheduler

    out = []
    for name in available():
        cls = get_scheduler(name)
        if cls.finish is Scheduler.finish and cls.forget is cls.batch_free_forget and cls.forget is not Scheduler.forget:
            out.append(name)
    return out


class _Tripwire:
    """Stands for `running`, a queue or the KV cache while `forget` runs: any use fails."""

    def __init__(self, name: str) -> None:
        self._name = name

    def _touched(self, *_):
        raise AssertionError(f"`forget` used the scheduler's {self._name}")

    def __getattr__(self, attr):
        self._touched()

    __len__ = __iter__ = __contains__ = __bool__ = __getitem__ = _touched


def _run(monkeypatch, name: str, one_by_one: bool, tripwires: bool):
    """`name` serving 18 requests that finish several a step (equal lengths in threes), some
    sharing prefix blocks, with priorities and own targets, in a cache small enough to preempt.
    Finishes in bulk unless `one_by_one` (its `forget` then not vouched for); with `tripwires`,
    each `forget` runs with `running`, the queues and the KV cache out of its reach."""
    from servesim.replica.schedulers import get_scheduler

    if one_by_one:
        monkeypatch.setattr(get_scheduler(name), "batch_free_forget", None)
    engine, sched, kv, loop, _ = make_engine(num_blocks=24, block_size=4, scheduler=name, max_num_seqs=6,
                                             params=_PARAMS.get(name))
    bulk = []
    free_all = kv.free_all
    monkeypatch.setattr(kv, "free_all", lambda ids: (bulk.append(len(ids)), free_all(ids)))
    if tripwires:
        forget = sched.forget

        def guarded(req):
            held = sched.running, sched.waiting, sched.swapped, sched.kv
            sched.running, sched.waiting, sched.swapped, sched.kv = map(_Tripwire, ("running", "waiting", "swapped",
                                                                                    "kv"))
            try:
                forget(req)
            finally:
                sched.running, sched.waiting, sched.swapped, sched.kv = held

        sched.forget = guarded
    reqs = [make_request(i, 8 + 4 * (i // 3 % 3), 3 + 2 * (i // 3 % 2), arrival=0.003 * (i // 3),
                         hash_ids=(7, 100 + i) if i % 3 == 1 else (), hash_block_tokens=4, priority=i % 2,
                         tpot_slo_s=0.03 if i % 4 == 0 else None) for i in range(18)]
    serve(engine, loop, reqs)
    outcome = [(r.state, r.first_token_s, r.finish_s, r.num_preemptions, r.num_cached_tokens_total, r.token_steps)
               for r in reqs]
    assert all(state is RequestState.FINISHED for state, *_ in outcome)
    return outcome, (kv.num_free_blocks, _queue(kv)), sum(n for n in bulk if n > 1)


def test_the_vouched_policies():
    # (a policy added here was checked as below: its `forget` reads and writes its own tables only)
    assert sorted(_vouched()) == ["autellix", "batchllm", "edf", "priority", "trtllm"]


@pytest.mark.parametrize("name", _vouched())
def test_a_vouched_forget_keeps_off_running_the_queues_and_the_kv_cache(monkeypatch, name):
    # the bulk path frees every finish's blocks and empties `running` of them before the first
    # `forget`: one that read either would see what one-by-one finishes never show it
    _, _, bulk = _run(monkeypatch, name, one_by_one=False, tripwires=True)
    assert bulk > 0  # (finishes went through the one pass, each `forget` behind the tripwires)


@pytest.mark.parametrize("name", _vouched())
def test_a_vouched_policy_finishes_in_bulk_as_one_at_a_time(monkeypatch, name):
    outcome, kv_state, bulk = _run(monkeypatch, name, one_by_one=False, tripwires=False)
    assert bulk > 0
    outcome_one, kv_state_one, bulk_one = _run(monkeypatch, name, one_by_one=True, tripwires=False)
    assert bulk_one == 0
    assert outcome == outcome_one and kv_state == kv_state_one
