"""`Scheduler.remove` for every policy and queue position, and the engine-facing contract.

The scheduler is driven step by step by a minimal stand-in for the engine (advance the
scheduled tokens, finish, `end_step`), so a request can be taken out between two steps in
whatever position it reached: waiting, running mid-prefill, running a decode, or swapped.
"""

from __future__ import annotations

import pytest

from servesim.replica.schedulers import available
from servesim.replica.schedulers.base import NO_FAST_FORWARD, FastForward, SchedulerOutput
from servesim.workload.request import Request, RequestState
from tests.factories import make_engine, make_request

CHUNKED = {"vllm", "continuum", "priority", "edf", "autellix", "andes", "fastswitch", "hygen", "sglang", "trtllm"}
SWAPPING = {"andes", "autellix", "fastswitch", "vllm-v0"}
# Where each policy can hold a request between two steps of the workload below: a prompt
# is only seen half done by policies that chunk it (64-token budget, 96-token prompts; batchllm
# has no token budget unless set);
# only swapping policies hold requests on the CPU tier (vllm-v0 with preemption_mode swap).
EXPECTED = {name: {"waiting", "decode"} | ({"prefill"} if name in CHUNKED else set())
            | ({"swapped"} if name in SWAPPING else set()) for name in available()}
# trtllm with chunked context: off (its default) the engine would reject these prompts (96 > 64 tokens)
PARAMS = {"vllm-v0": {"preemption_mode": "swap"}, "andes": {"util_threshold": 0.5}, "trtllm": {"enable_chunked_context": True}}


def workload() -> list[Request]:
    """Eight 96-token prompts sharing a 32-token prefix, 40 output tokens each: 36 blocks
    for four running requests in a 24-block cache, so policies preempt or swap."""
    reqs = []
    for i in range(8):
        r = make_request(i, 96, 40, arrival=0.001 * i, tenant="ab"[i % 2], priority=i % 3,
                         program_id=i // 2, is_offline=bool(i % 2))
        r.kv_block_keys = (("sys", 16), ("sys", 32)) + tuple((i, e) for e in range(48, 97, 16))
        reqs.append(r)
    return reqs


def setup(name: str):
    _, sched, kv, _, _ = make_engine(num_blocks=24, scheduler=name, num_cpu_blocks=64, params=PARAMS.get(name),
                                     max_num_batched_tokens=64, max_num_seqs=4)
    reqs = workload()
    for r in reqs:
        sched.add_request(r, r.arrival_s)
    return sched, kv, reqs


def step(sched, now_s: float, num_steps: int) -> None:
    """One engine step as the engine runs it, without the perf model (swaps are instant)."""
    out = sched.schedule(now_s)
    for req in out.swapped_in:
        if sched.swap_mechanics.overlap:
            sched.swap_done(req, now_s)
    finished = []
    for req, n in out.scheduled:
        req.num_computed_tokens += n
        if req.num_computed_tokens >= req.num_tokens:  # caught up: one token out
            req.num_output_tokens += 1
            runs = req.token_steps  # (as `Engine.emit`: andes reads a note's step from it)
            if runs and runs[-1] == num_steps - 1:
                runs[-1] = num_steps
            else:
                runs += (num_steps, num_steps)
            if req.num_output_tokens >= req.output_len:
                finished.append(req)
    for req in finished:
        req.state = RequestState.FINISHED
        sched.finish(req, now_s)
    sched.end_step(out, now_s, num_steps + 1)


def position(sched, req: Request) -> str | None:
    if any(r is req for r in sched.swapped):
        return "swapped"
    if any(r is req for r in sched.running):
        return "decode" if req.num_computed_tokens >= req.prompt_len else "prefill"
    return "waiting" if any(r is req for r in sched.unfinished()) else None


def run_to_end(sched, now_s: float, first_step: int) -> float:
    for k in range(first_step, first_step + 2000):
        if not sched.unfinished():
            return now_s
        step(sched, now_s, k)
        now_s += 0.01
    raise AssertionError("the run did not finish")


@pytest.mark.parametrize("where", ["waiting", "prefill", "decode", "swapped"])
@pytest.mark.parametrize("name", available())
def test_remove_takes_a_request_out_of_any_position_and_frees_its_kv(name, where):
    sched, kv, reqs = setup(name)
    now_s, k, found = 0.01, 0, None
    while k < 300 and sched.unfinished():
        found = next((r for r in reqs if position(sched, r) == where), None)
        if found is not None:
            break
        step(sched, now_s, k)
        now_s += 0.01
        k += 1
    if where not in EXPECTED[name]:
        assert found is None, f"{name} held a request in position {where}"
        return
    assert found is not None, f"{name} never held a request in position {where}"
    state = found.state
    if where == "swapped":
        assert kv.num_cpu_blocks_of(found.id) > 0 and kv.num_blocks_of(found.id) == 0
    elif where != "waiting":
        assert kv.num_blocks_of(found.id) > 0
    assert sched.remove(found, now_s)
    assert found.state is state and not found.state.terminal  # the caller gives the terminal state
    assert position(sched, found) is None
    assert kv.num_blocks_of(found.id) == 0 and kv.num_cpu_blocks_of(found.id) == 0
    assert not sched.remove(found, now_s)  # no longer held
    now_s = run_to_end(sched, now_s, k)
    others = [r for r in reqs if r is not found]
    assert all(r.state == RequestState.FINISHED and r.num_output_tokens == r.output_len for r in others)
    assert sched.drain(now_s) == []
    kv.check_all_free()


@pytest.mark.parametrize("name", available())
def test_removing_everything_mid_run_returns_every_block(name):
    sched, kv, reqs = setup(name)
    for k in range(12):
        step(sched, 0.01 * (k + 1), k)
    held = sched.unfinished()
    assert held, "the run should still hold requests after 12 steps"
    for req in held:
        assert sched.remove(req, 0.2)
    assert sched.unfinished() == [] and sched.num_waiting == 0 and sched.num_running == 0
    assert sched.drain(0.2) == []  # releases what the policy holds beyond requests (pins, copies)
    kv.check_all_free()


def test_drain_returns_the_requests_still_held_and_empties_the_queues():
    sched, kv, reqs = setup("vllm")
    step(sched, 0.01, 0)
    held = sched.drain(0.02)
    assert sorted(r.id for r in held) == list(range(8))
    assert sched.unfinished() == [] and not sched.waiting and not sched.running
    assert all(not r.state.terminal for r in held)  # the engine marks them dropped
    kv.check_all_free()


def test_end_step_records_the_engine_step_count_and_calls_the_policy_hook():
    sched, *_ = setup("fastswitch")
    sched.end_step(SchedulerOutput(), 1.0, 7)
    assert sched.num_engine_steps == 7


def test_fast_forward_is_one_answer_per_step():
    sched, *_ = setup("vllm")
    out = sched.schedule(0.01)  # admits with requests still waiting: no repeat
    assert sched.fast_forward(out) is NO_FAST_FORWARD
    for r in list(sched.waiting):
        sched.remove(r, 0.01)
    step(sched, 0.02, 1)
    out = sched.schedule(0.03)
    ff = sched.fast_forward(out)
    assert ff == FastForward(repeat=True, after_prefill=True, through_finishes=True)
    # orca with nobody waiting: prompts run whole then decode, and a finish admits nobody
    assert make_engine(scheduler="orca")[1].fast_forward(SchedulerOutput()) == \
        FastForward(repeat=True, after_prefill=True, through_finishes=True)
