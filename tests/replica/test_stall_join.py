"""Arrivals joining a stretch as a prompt-only step (`Stretch.stall`, `stretch_join._stall_join`):
a prefill-first policy (`vllm-v0`, `sglang`) runs an admitted prompt alone, the decodes stalled, then
decodes the grown batch. Fast-forwarded runs where arrivals join that way give exactly the run
stepping gives (every request's tokens, token steps, times and computed tokens, the whole step
log), and the joins really happen."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.perf.build import build_perf_model
from servesim.replica import stretch_join
from tests.factories import REQUEST_OUTCOME, ToyPerf, assert_same_run, make_request
from tests.replica.test_stretch_join import light_load, run

FIELDS = REQUEST_OUTCOME + ("first_scheduled_s", "num_computed_tokens", "token_steps")


@pytest.fixture(scope="module")
def llama():
    return build_perf_model("llama-3.1-8b", "h100-sxm")


@pytest.fixture
def stalls(monkeypatch):
    """Counts the prompt-only joins (each call that joined)."""
    calls = []
    join = stretch_join._stall_join
    monkeypatch.setattr(stretch_join, "_stall_join", lambda *args: join(*args) and not calls.append(1))
    return calls


STALLING = [("vllm-v0", {}), ("vllm-v0", {"watermark": 0.2}), ("vllm-v0", {"preemption_mode": "swap"}),
            ("sglang", {}), ("sglang", {"schedule_conservativeness": 3.0}), ("sglang", {"max_prefill_tokens": 250})]


@pytest.mark.parametrize("scheduler,params", STALLING)
@pytest.mark.parametrize("seed,num_blocks", [(1, 2000), (2, 300), (3, 120)])
@pytest.mark.parametrize("perf_name", ["toy", "llama"])
def test_arrivals_join_as_prompt_only_steps(scheduler, params, seed, num_blocks, perf_name, llama, stalls):
    perf = ToyPerf() if perf_name == "toy" else llama  # scalar decode form / affine forms (numpy chunks)
    a_reqs, b_reqs = light_load(seed), light_load(seed)
    a = run(a_reqs, True, num_blocks, perf, scheduler=scheduler, params=params)
    b = run(b_reqs, False, num_blocks, perf, scheduler=scheduler, params=params)
    assert_same_run(a, b, a_reqs, b_reqs, num_blocks, FIELDS)
    # most arrivals joined a stretch in flight (fewer where the watermark or 120 blocks hold
    # newcomers back), each as a prompt-only step; none when stepping. SGLang reserves about
    # 2,900 tokens (180 blocks) per running request: with 300 or 120 blocks it admits only
    # into an idle engine, when stepping too, so nothing can join there
    if scheduler == "sglang" and num_blocks < 2000:
        assert a.num_joined_arrivals == 0
        return
    share = 0.3 if num_blocks > 120 else 0.05
    assert a.num_joined_arrivals > share * len(a_reqs) and len(stalls) > 0
    assert b.num_joined_arrivals == 0
    # the stalls are in the step log: steps that computed a prompt and emitted fewer tokens than ran
    log = a.recorder.step_log(num_blocks)
    assert ((log.prefill_tokens > 0) & (log.num_running > log.output_tokens + 1)).any()


@pytest.mark.parametrize("scheduler,small", [("vllm-v0", {"max_num_batched_tokens": 150, "max_num_seqs": 6}),
                                             ("sglang", {"chunked_prefill_size": 150, "max_running_requests": 6})])
def test_bursts_and_budget_limited_prompts_stay_exact(scheduler, small, llama, stalls):
    # four arrivals in one step join together as one prompt-only step; prompts beyond the
    # prefill budget or the cap on running requests do not join and stay exact
    bursts = [[make_request(4 * i + j, 30 + 7 * j, 40 + 13 * i % 50, 0.3 * i + 1e-4 * j)
               for i in range(40) for j in range(4)] for _ in range(2)]
    a = run(bursts[0], True, 2000, llama, scheduler=scheduler, params={})
    b = run(bursts[1], False, 2000, llama, scheduler=scheduler, params={})
    assert_same_run(a, b, bursts[0], bursts[1], 2000, FIELDS)
    # (SGLang's decode reserve holds back some bursts: about 90 of the 160 requests join)
    assert a.num_joined_arrivals >= (100 if scheduler == "vllm-v0" else 60) and a.num_joined_arrivals >= 2 * len(stalls)
    a_reqs, b_reqs = light_load(5, gap_s=0.1, max_prompt=300), light_load(5, gap_s=0.1, max_prompt=300)
    a = run(a_reqs, True, 2000, llama, scheduler=scheduler, params=small)
    b = run(b_reqs, False, 2000, llama, scheduler=scheduler, params=small)
    assert_same_run(a, b, a_reqs, b_reqs, 2000, FIELDS)
    assert 0 < a.num_joined_arrivals < len(a_reqs) - sum(r.prompt_len > 150 for r in a_reqs)


def test_vllm_v0_answers_which_arrivals_join(llama):
    from tests.factories import make_engine
    engine, sched, kv, loop, _ = make_engine(num_blocks=100, perf=llama, scheduler="vllm-v0",
                                             params={"max_num_batched_tokens": 100})
    assert sched.stalls_decodes
    a, b = make_request(0, 60, 5, 0.0), make_request(1, 50, 5, 0.0)
    sched.add_request(a, 0.0)
    assert sched.arrivals_join(3) == [(a, 60)]  # (the decodes take nothing from a prefill step's budget)
    sched.add_request(b, 0.0)
    assert sched.arrivals_join(3) is None  # 110 tokens > the budget of 100: stepping admits only the first


def test_sglang_answers_which_arrivals_join(llama):
    from tests.factories import make_engine
    engine, sched, kv, loop, _ = make_engine(num_blocks=400, perf=llama, scheduler="sglang",
                                             params={"max_prefill_tokens": 100}, max_num_batched_tokens=256)
    a, b, c = make_request(0, 60, 5, 0.0), make_request(1, 30, 5, 0.0), make_request(2, 30, 5, 0.0)
    sched.add_request(a, 0.0)
    sched.add_request(b, 0.0)
    assert sched.arrivals_join(3) == [(a, 60), (b, 30)]
    sched.add_request(c, 0.0)
    assert sched.arrivals_join(3) is None  # 30 >= the 10 prefill tokens a and b leave: stepping stops there
    # the blocks kept free beyond the prompts' cover each request's new tokens and `max_new`
    # (max_model_len 4,096 less its prompt) and the reserve (nothing runs): a block to spare
    assert sched.join_blocks([(a, 60), (b, 30)]) == (4 + 2, (60 + 4036 + 30 + 4066) // 16 + 2 - 6)


@pytest.mark.parametrize("scheduler", ["vllm-v0", "sglang"])
@pytest.mark.parametrize("perf_name", ["toy", "llama"])
def test_a_lone_arrivals_stall_takes_the_lean_join(scheduler, perf_name, llama, stalls, monkeypatch):
    # one arrival stalling a stretch whose scalar state is the stall step's (the usual case)
    # is added by `join_one`, as a plain join is: the run is stepping's, and that path ran
    from servesim.replica.stretch_joins import StretchJoins

    lean = []
    join_one = StretchJoins.join_one
    monkeypatch.setattr(StretchJoins, "join_one", lambda self, *args: lean.append(1) or join_one(self, *args))
    perf = ToyPerf() if perf_name == "toy" else llama
    a_reqs, b_reqs = light_load(4), light_load(4)
    a = run(a_reqs, True, 2000, perf, scheduler=scheduler, params={})
    b = run(b_reqs, False, 2000, perf, scheduler=scheduler, params={})
    assert_same_run(a, b, a_reqs, b_reqs, 2000, FIELDS)
    assert len(stalls) > 0.3 * len(a_reqs) and len(lean) > 0.5 * len(stalls)


def test_sglang_mixed_chunks_do_not_join(llama):
    a_reqs, b_reqs = light_load(1), light_load(1)
    a = run(a_reqs, True, 2000, llama, scheduler="sglang", params={"enable_mixed_chunk": True})
    b = run(b_reqs, False, 2000, llama, scheduler="sglang", params={"enable_mixed_chunk": True})
    assert_same_run(a, b, a_reqs, b_reqs, 2000, FIELDS)
    assert a.num_joined_arrivals == 0


@pytest.mark.parametrize("scheduler", ["vllm-v0", "sglang"])
@pytest.mark.parametrize("crash_s", [0.03, 0.1005, 0.103, 0.12, 0.3, 0.5])
def test_a_crash_after_a_prompt_only_join_matches_stepping(scheduler, crash_s):
    # the second and third requests join as prompt-only steps at 0.0266-0.0406 and
    # 0.1024-0.1154 (Llama-3.1-8B on an H100): a crash during either (the stretch settled with
    # the stall in flight: its prompt lost, the stalled decodes' steps before it kept), between
    # them, just after the second or later
    from tests.factories import STEP_LOG_COLUMNS, make_engine, serve_until_crash

    def crashed(ff: bool):
        engine, _, _, loop, _ = make_engine(num_blocks=2000, scheduler=scheduler, params={}, defer_finishes=True,
                                            fast_forward=ff)
        reqs = [make_request(0, 64, 300), make_request(1, 40, 300, 0.02), make_request(2, 30, 200, 0.1)]
        lost = serve_until_crash(engine, loop, reqs, crash_s)
        return engine, reqs, lost

    (a, a_reqs, a_lost), (b, b_reqs, b_lost) = crashed(True), crashed(False)
    assert a.num_joined_arrivals >= 1 and b.num_joined_arrivals == 0
    assert [r.id for r in a_lost] == [r.id for r in b_lost]
    for x, y in zip(a_reqs, b_reqs):
        assert (x.num_output_tokens, x.token_steps, x.first_token_s, x.num_computed_tokens) == (
            y.num_output_tokens, y.token_steps, y.first_token_s, y.num_computed_tokens)
    assert a.num_steps == b.num_steps
    la, lb = a.recorder.step_log(2000), b.recorder.step_log(2000)
    for col in STEP_LOG_COLUMNS:
        assert np.array_equal(getattr(la, col), getattr(lb, col)), col

