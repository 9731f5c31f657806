"""The step after a replica's last finish: a scheduler that says it has nothing (`Scheduler.idle`:
vllm, orca, andes, vtc) is not asked to `schedule` it; the engine goes idle as that empty step would
have left it, with speculative decoding too."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.perf.build import build_perf_model
from servesim.replica.engine import Engine
from servesim.replica.schedulers.base import Scheduler
from tests.factories import REQUEST_OUTCOME, STEP_LOG_COLUMNS, make_engine, make_request, serve
from tests.replica.test_spec_join import assert_same_spec_run, spec_run
from tests.replica.test_stretch_join import light_load


def _reqs():
    # two bursts with a gap: the replica drains and goes idle between them (and at the end)
    return [make_request(i, 20 + 7 * i, 5 + 3 * (i % 4), arrival=0.001 * i + (2.0 if i >= 4 else 0.0))
            for i in range(8)]


def _run(fast_forward: bool, hook: bool, monkeypatch=None, scheduler: str = "vllm", num_blocks: int = 200):
    engine, sched, _, loop, done = make_engine(num_blocks=num_blocks, scheduler=scheduler, fast_forward=fast_forward)
    if not hook:
        monkeypatch.setattr(type(sched), "idle", Scheduler.idle)
    calls = []
    schedule = sched.schedule
    sched.schedule = lambda now_s: (calls.append(now_s), schedule(now_s))[1]
    reqs = _reqs()
    serve(engine, loop, reqs)
    return engine, reqs, calls


# orca with 12 blocks: its reservations block the head of each burst behind a finish
@pytest.mark.parametrize("scheduler, num_blocks", [("vllm", 200), ("orca", 200), ("orca", 12), ("andes", 200),
                                                   ("vtc", 200), ("vtc", 12)])
@pytest.mark.parametrize("fast_forward", [False, True])
def test_no_schedule_after_the_last_finish_and_the_same_run(fast_forward, scheduler, num_blocks, monkeypatch):
    with monkeypatch.context() as m:
        slow, slow_reqs, slow_calls = _run(fast_forward, False, m, scheduler, num_blocks)
    fast, fast_reqs, fast_calls = _run(fast_forward, True, None, scheduler, num_blocks)
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


@pytest.mark.parametrize("scheduler", ["vllm", "orca", "andes", "vtc"])
def test_idle_only_with_nothing_held(scheduler):
    _, sched, _, _, _ = make_engine(num_blocks=200, scheduler=scheduler)
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


def test_orca_not_idle_with_its_head_flag_set():
    # (set by a held speculative join; `schedule` resets it: asked once more)
    _, sched, _, _, _ = make_engine(num_blocks=200, scheduler="orca")
    sched._head_blocked = True
    assert not sched.idle()


@pytest.mark.parametrize("scheduler", ["orca", "andes", "vtc"])
@pytest.mark.parametrize("seed,num_blocks", [(1, 2000), (2, 160)])
def test_speculative_runs_go_idle_without_schedule_as_stepping(scheduler, seed, num_blocks, monkeypatch):
    # arrivals 2 s apart on average: the replica drains between many of them; fast-forwarded with
    # the hook against stepping that asks `schedule` every time
    perf = build_perf_model("llama-3.1-8b", "h100-sxm")
    idles = []
    go_idle = Engine._go_idle
    monkeypatch.setattr(Engine, "_go_idle", lambda self, now_s: (idles.append(now_s), go_idle(self, now_s))[1])
    a_reqs, b_reqs = light_load(seed, n=120, gap_s=2.0), light_load(seed, n=120, gap_s=2.0)
    a = spec_run(a_reqs, True, num_blocks, perf, scheduler)
    num_idle = len(idles)
    with monkeypatch.context() as m:
        m.setattr(type(a.scheduler), "idle", Scheduler.idle)
        b = spec_run(b_reqs, False, num_blocks, perf, scheduler)
    assert len(idles) == num_idle  # (stepping never skipped `schedule`)
    assert_same_spec_run(a, b, a_reqs, b_reqs, num_blocks, REQUEST_OUTCOME + ("num_computed_tokens",
                                                                              "first_scheduled_s"))
    assert num_idle >= 20  # the path ran: the replica went idle without `schedule` that often
    assert a.num_fast_forwarded_steps > a.num_steps // 2
