"""The step after a replica's last finish: a scheduler that says it has nothing (`Scheduler.idle`)
is not asked to `schedule` it; the engine goes idle as that empty step would have left it."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.replica.schedulers.base import Scheduler
from tests.factories import STEP_LOG_COLUMNS, make_engine, make_request, serve


def _reqs():
    # two bursts with a gap: the replica drains and goes idle between them (and at the end)
    return [make_request(i, 20 + 7 * i, 5 + 3 * (i % 4), arrival=0.001 * i + (2.0 if i >= 4 else 0.0))
            for i in range(8)]


def _run(fast_forward: bool, hook: bool, monkeypatch=None):
    engine, sched, _, loop, done = make_engine(num_blocks=200, fast_forward=fast_forward)
    if not hook:
        monkeypatch.setattr(type(sched), "idle", Scheduler.idle)
    calls = []
    schedule = sched.schedule
    sched.schedule = lambda now_s: (calls.append(now_s), schedule(now_s))[1]
    reqs = _reqs()
    serve(engine, loop, reqs)
    return engine, reqs, calls


@pytest.mark.parametrize("fast_forward", [False, True])
def test_no_schedule_after_the_last_finish_and_the_same_run(fast_forward, monkeypatch):
    with monkeypatch.context() as m:
        slow, slow_reqs, slow_calls = _run(fast_forward, hook=False, monkeypatch=m)
    fast, fast_reqs, fast_calls = _run(fast_forward, hook=True)
    # the replica drains twice (after each burst): two empty `schedule` calls fewer
    assert len(slow_calls) - len(fast_calls) == 2
    assert not fast.busy and not slow.busy
    assert fast.num_steps == slow.num_steps
    if fast_forward:
        assert fast.num_fast_forwarded_steps > fast.num_steps // 2  # (stretches ran: the finishes were theirs)
    for x, y in zip(fast_reqs, slow_reqs, strict=True):
        assert (x.state, x.first_token_s, x.finish_s, x.token_steps) == (y.state, y.first_token_s, y.finish_s,
                                                                          y.token_steps)
    la, lb = fast.recorder.step_log(200), slow.recorder.step_log(200)
    for col in STEP_LOG_COLUMNS:
        assert np.array_equal(getattr(la, col), getattr(lb, col)), col


def test_vllm_idle_only_with_nothing_held():
    _, sched, _, _, _ = make_engine(num_blocks=200)
    assert sched.idle()
    sched.add_request(make_request(0, 10, 2), 0.0)
    assert not sched.idle()  # a waiting request
    out = sched.schedule(0.0)
    assert out.scheduled and not sched.waiting and sched.running
    assert not sched.idle()  # a running one


def test_vllm_not_idle_with_adapters_nor_for_subclasses():
    _, sched, _, _, _ = make_engine(num_blocks=200)
    sched.add_request(make_request(0, 10, 2, lora="a"), 0.0)
    sched.waiting.clear()
    assert sched.lora is not None and not sched.idle()  # (adapter loads advance at each `schedule`)
    _, continuum, _, _, _ = make_engine(num_blocks=200, scheduler="continuum")
    assert not continuum.running and not continuum.waiting and not continuum.idle()
    _, sarathi, _, _, _ = make_engine(num_blocks=200, scheduler="sarathi")
    assert not sarathi.idle()  # (the default: always asked)
