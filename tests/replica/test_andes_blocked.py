"""Andes fast-forwards behind a blocked queue: requests pending (waiting or swapped), none of
which can come in before the next finish, and a preemption cap of 0 by the slack count, so
every `schedule` until then runs the same decodes. The run equals stepping one by one (every
request's tokens and times, the step log, the swap time), and such stretches really run."""

from __future__ import annotations

import pytest

from servesim.perf.build import build_perf_model
from servesim.replica.schedulers.andes import AndesScheduler
from servesim.replica.schedulers.andes_pending import PendingOrder
from tests.factories import REQUEST_OUTCOME, ToyPerf, assert_same_run
from tests.replica.test_admission_stretch import overload, run

FIELDS = REQUEST_OUTCOME + ("num_cached_tokens", "first_scheduled_s", "num_computed_tokens")


@pytest.fixture(scope="module")
def llama():
    return build_perf_model("llama-3.1-8b", "h100-sxm")


def blocked_steps(monkeypatch) -> list[int]:
    """Record the pending count each time `fast_forward` repeats a step with requests pending
    (before this change it never did: it repeated only with nothing pending)."""
    seen: list[int] = []
    ff = AndesScheduler.fast_forward

    def counted(self, output):
        answer = ff(self, output)
        if answer.repeat and len(self._pending):
            seen.append(len(self._pending))
        return answer

    monkeypatch.setattr(AndesScheduler, "fast_forward", counted)
    return seen


# (KV blocks; a CPU tier of 40 blocks: swaps fail and preempt by recompute; toy and Llama-3.1-8B
# models: the scalar decode form and the affine forms)
@pytest.mark.parametrize("seed,num_blocks,num_cpu_blocks,perf_name", [
    (1, 300, None, "toy"), (3, 300, 40, "toy"), (2, 200, None, "llama"), (4, 600, None, "llama")])
def test_blocked_queue_stretches_match_stepping(seed, num_blocks, num_cpu_blocks, perf_name, llama, monkeypatch):
    perf = ToyPerf() if perf_name == "toy" else llama
    seen = blocked_steps(monkeypatch)
    a_reqs, b_reqs = overload(seed, max_prompt=400), overload(seed, max_prompt=400)
    a = run(a_reqs, True, num_blocks, perf, "andes", num_cpu_blocks=num_cpu_blocks)
    b = run(b_reqs, False, num_blocks, perf, "andes", num_cpu_blocks=num_cpu_blocks)
    assert_same_run(a, b, a_reqs, b_reqs, num_blocks, FIELDS)
    assert len(seen) > 20  # stretches planned with requests pending
    # and they held steps: more fast-forwarded than the stretches with nothing pending give
    with monkeypatch.context() as m:
        m.setattr(AndesScheduler, "_blocked", lambda self, *args: False)
        c_reqs = overload(seed, max_prompt=400)
        c = run(c_reqs, True, num_blocks, perf, "andes", num_cpu_blocks=num_cpu_blocks)
    assert a.num_fast_forwarded_steps > c.num_fast_forwarded_steps + 20
    print(seed, num_blocks, perf_name, len(seen), c.num_fast_forwarded_steps, a.num_fast_forwarded_steps, a.num_steps)


def test_min_need_follows_membership():
    """The sizes `min_need` reads are kept as requests come and go (waiting, swapped)."""
    from tests.factories import make_engine, make_request

    _, sched, kv, _, _ = make_engine(num_blocks=100, scheduler="andes", long_prefill_token_threshold=0)
    pending: PendingOrder = sched._pending
    reqs = [make_request(i, p, 5) for i, p in enumerate((70, 40, 90))]
    for r in reqs:
        sched.add_request(r, 0.0)
    assert pending.min_need(64, 0, 16) == 3  # min(40, budget 64) tokens: 3 blocks
    assert pending.min_need(20, 0, 16) == 2  # the budget caps the first chunk
    assert pending.min_need(64, 32, 16) == 2  # so does long_prefill_token_threshold
    sched.forget(reqs[1])
    assert pending.min_need(64, 0, 16) == 4  # 70 tokens capped at 64
    kv.cpu.store(reqs[0].id, 2, None)  # (as a swap-out leaves it: 2 CPU blocks)
    pending.add(reqs[0], 1)
    assert pending.min_need(64, 0, 16) == 3 and pending.swap_needs == [3] and pending.prompt_tokens == [90]
    sched.forget(reqs[0])
    sched.forget(reqs[2])
    assert not pending.swap_needs and not pending.prompt_tokens and pending.min_need(64, 0, 16) == float("inf")
