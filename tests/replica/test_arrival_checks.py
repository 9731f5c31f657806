"""An arrival's checks (`EngineArrivals._reject_reason`): the policy's own `admission_error` is
called only for a policy that has one; the base policy's refuses nothing and is not called per
arrival. Bound whenever the scheduler is set (the engine made, a restart)."""

from __future__ import annotations

from servesim.replica.schedulers.base import Scheduler
from servesim.workload.request import RequestState
from tests.factories import make_engine, make_request, serve


def test_the_base_policys_check_is_not_called_and_a_policys_own_refuses_as_before(monkeypatch):
    called = []
    monkeypatch.setattr(Scheduler, "admission_error", lambda self, req: called.append(req.id))
    engine, _, _, loop, done = make_engine(num_blocks=100, scheduler="vllm")
    assert engine._admission_error is None  # (vllm keeps the base policy's, patched or not: no call)
    reqs = [make_request(i, 32, 4, arrival=0.01 * i) for i in range(4)]
    serve(engine, loop, reqs)
    assert called == [] and all(r.state == RequestState.FINISHED for r in reqs)

    # vllm-v0 has its own (the watermark): called at every arrival, its refusal the reason given
    engine, sched, _, loop, done = make_engine(num_blocks=100, scheduler="vllm-v0")
    assert engine._admission_error == sched.admission_error
    big, small = make_request(0, 1584, 1), make_request(1, 32, 2, arrival=0.01)  # 1585 tokens: 100 blocks > 100 - 1
    serve(engine, loop, [big, small])
    assert big.state == RequestState.REJECTED and "watermark" in big.extra["reject_reason"]
    assert small.state == RequestState.FINISHED and called == []


def test_a_restart_binds_the_new_schedulers_check():
    engine, _, _, loop, _ = make_engine(num_blocks=100, scheduler="vllm")
    _, v0, kv, _, _ = make_engine(num_blocks=100, scheduler="vllm-v0")
    engine.restart(v0, kv)
    assert engine._admission_error == v0.admission_error
    r = make_request(0, 1584, 1)
    engine.add_request(r, 0.0)
    assert r.state == RequestState.REJECTED and "watermark" in r.extra["reject_reason"]
    _, vllm, kv, _, _ = make_engine(num_blocks=100, scheduler="vllm")
    engine.restart(vllm, kv)
    assert engine._admission_error is None


def test_binding_the_check_leaves_the_schedulers_attributes_alone():
    """`_policy_checks` reads the scheduler's check through its bound method, never its `__dict__`:
    on CPython 3.11 reading an instance's `__dict__` moves its attributes out of the inline values
    for good, and every later attribute read and method call on it misses its specialised form
    (reg32: +4.5 k instructions a vllm azure-conv request)."""
    read = []

    def watched(base):
        class Watched(base):
            @property
            def __dict__(self):  # (what `vars(sched)` reads)
                read.append(type(self).__name__)
                raise AssertionError("the scheduler's __dict__ read")
        return Watched

    for name, bound in (("vllm", False), ("vllm-v0", True)):
        engine, sched, kv, loop, _ = make_engine(num_blocks=100, scheduler=name)
        sched.__class__ = watched(type(sched))
        engine.restart(sched, kv)
        assert read == []
        assert (engine._admission_error == sched.admission_error) if bound else engine._admission_error is None
