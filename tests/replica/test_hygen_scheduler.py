"""HyGen driven step by step: online first, offline fill up to a predicted step-time budget."""

from __future__ import annotations

import pytest

from servesim.workload.request import RequestState
from tests.factories import make_engine, make_request
from tests.replica.test_vllm_scheduler import run_logged


def test_offline_chunks_fill_the_latency_budget():
    # ToyPerf: 10 ms + 0.1 ms per token + 1 us per context token; budget 12.5 ms.
    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="hygen", fast_forward=False,
                                                params={"latency_budget_s": 0.0125})
    online = make_request(0, 10, 5)
    offline = [make_request(1, 100, 3, is_offline=True), make_request(2, 50, 3, is_offline=True)]
    steps = run_logged(engine, loop, [online] + offline)
    assert steps[0] == [(0, 10), (1, 15)]  # 25 tokens: 12.5 ms
    assert steps[1] == [(0, 1), (1, 23)]  # 24 tokens + 25 context tokens: 12.425 ms
    assert steps[4] == [(0, 1), (1, 16), (2, 7)]  # the rest of 1, then 2 starts
    assert steps[5] == [(1, 1), (2, 22)]  # offline decodes come before offline chunks
    assert all(r.state == RequestState.FINISHED for r in [online] + offline)


def test_online_request_preempts_offline_work_for_memory():
    engine, sched, kv, loop, done = make_engine(num_blocks=7, scheduler="hygen", fast_forward=False,
                                                max_num_batched_tokens=128, params={"latency_budget_s": 1.0})
    offline, online = make_request(1, 96, 10, is_offline=True), make_request(0, 30, 2, arrival=0.03)
    steps = run_logged(engine, loop, [offline, online])
    assert steps[:3] == [[(1, 96)], [(1, 1)], [(1, 1)]]
    assert steps[3] == [(0, 30)]  # 2 blocks needed, 1 free: the offline request is preempted
    assert steps[4] == [(0, 1)]
    # recompute of 96 + 3 tokens once the online request is done, less its 5 full blocks (of
    # 6 computed) that the online request's 2 blocks did not evict
    assert steps[5] == [(1, 99 - 80)]
    assert offline.num_preemptions == 1 and online.num_preemptions == 0


def test_prefix_order_groups_offline_requests_sharing_a_prefix():
    engine, sched, *_ = make_engine(scheduler="hygen")
    reqs = [make_request(0, 8, 1, is_offline=True), make_request(1, 8, 1, is_offline=True),
            make_request(2, 8, 1, is_offline=True)]
    reqs[0].kv_block_keys, reqs[1].kv_block_keys, reqs[2].kv_block_keys = ((9, 16),), ((3, 16),), ((9, 16), (4, 32))
    for r in reqs:
        sched.add_request(r, 0.0)
    assert [r.id for r in sched._offline_order(0.0)] == [1, 0, 2]
    sched.params = sched.Params(offline_max_wait_s=1.0)
    reqs[2].arrival_s = -5.0
    assert [r.id for r in sched._offline_order(0.0)][0] == 2  # waited 5 s: goes first


def _overloaded(offline_every: int):
    from tests.replica.test_blocked_arrivals import overloaded_requests

    reqs = overloaded_requests(5, n=200)
    for r in reqs[::offline_every] if offline_every else ():
        r.is_offline = True
    return reqs


@pytest.mark.parametrize("offline_every", [0, 3])
def test_bulk_decodes_decide_as_the_per_request_loop(offline_every, monkeypatch):
    """Overloaded, online only and with offline work: the leading online decodes taken in one
    call (`allocate_leading_decodes`, also when a chunked prompt or a request without a free
    block follows them, and again after an eviction) give the same run, preemptions included, as the loop that allocates
    request by request; and fast-forwarded, the same run as stepped."""
    from servesim.replica.kv_cache import KVCacheManager
    from tests.factories import REQUEST_OUTCOME, STEP_LOG_COLUMNS, assert_same_run, run_engine

    from servesim.replica.schedulers.hygen import HyGenScheduler

    full, part, later = [], [], []  # whole and cut batches; a schedule's calls after its first
    bulk, schedule = KVCacheManager.allocate_leading_decodes, HyGenScheduler.schedule
    calls = [0]

    def counted(kv, reqs):
        k = bulk(kv, reqs)
        (full if k == len(reqs) else part).append(k)
        calls[0] += 1
        if calls[0] > 1:
            later.append(k)  # (after a prompt chunk or an eviction in the running pass)
        return k

    def counted_schedule(sched, now_s):
        calls[0] = 0
        return schedule(sched, now_s)

    monkeypatch.setattr(KVCacheManager, "allocate_leading_decodes", counted)
    monkeypatch.setattr(HyGenScheduler, "schedule", counted_schedule)
    a_reqs = _overloaded(offline_every)
    a = run_engine(a_reqs, False, 60, "hygen", {})
    f_reqs = _overloaded(offline_every)
    f = run_engine(f_reqs, True, 60, "hygen", {})
    monkeypatch.setattr(KVCacheManager, "allocate_leading_decodes", lambda kv, reqs: 0)
    b_reqs = _overloaded(offline_every)
    b = run_engine(b_reqs, False, 60, "hygen", {})
    # both paths really ran: whole batches and batches cut short by a prompt or a missing block
    assert len(full) > 100 and sum(k > 0 for k in part) > 100, (len(full), len(part))
    assert sum(k > 0 for k in later) > 20, later
    assert sum(r.num_preemptions for r in a_reqs) > 0
    assert a.num_steps == b.num_steps
    for x, y in zip(a_reqs, b_reqs, strict=True):
        assert [getattr(x, f) for f in REQUEST_OUTCOME] == [getattr(y, f) for f in REQUEST_OUTCOME]
    la, lb = a.recorder.step_log(60), b.recorder.step_log(60)
    for col in STEP_LOG_COLUMNS:
        assert (getattr(la, col) == getattr(lb, col)).all(), col
    assert f.num_fast_forwarded_steps > 0 or offline_every  # (offline decodes: hygen steps)
    assert_same_run(f, a, f_reqs, a_reqs, 60)


def test_a_blocked_head_holds_the_batch_until_a_finish():
    """The online head that KV holds back lets decode-only steps repeat (fast-forwarded), and
    online arrivals queue behind it; an offline arrival would cut."""
    from tests.factories import run_engine
    from tests.replica.test_blocked_arrivals import overloaded_requests

    reqs = overloaded_requests(9, n=200)
    engine = run_engine(reqs, True, 60, "hygen", {})
    assert engine.num_fast_forwarded_steps > 0.8 * engine.num_steps  # measured: 94.5% (2.9% before)
    sched = engine.scheduler
    offline = make_request(999, 10, 5, 0.0)
    offline.is_offline = True
    sched._head_blocked, sched._online_only = True, True
    sched.waiting.append(make_request(998, 10, 5, 0.0))
    sched._blocked_head = sched.waiting.peek()
    assert sched.arrival_keeps_batch(make_request(997, 10, 5, 0.0))
    assert not sched.arrival_keeps_batch(offline) and sched.arrival_keeps_batch(None)  # (the next arrival: guessed online)
