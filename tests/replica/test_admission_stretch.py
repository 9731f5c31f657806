"""Admission stretches (`replica/admission_stretch.py`): under a waiting queue, finishes admit
the queue head inside a stretch, giving exactly the run stepping one by one gives (every
request's tokens and times, the whole step log), and the admissions really happen there."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.perf.build import build_perf_model
from tests.factories import REQUEST_OUTCOME, ToyPerf, assert_same_run, make_engine, make_request, serve

FIELDS = REQUEST_OUTCOME + ("num_cached_tokens", "first_scheduled_s", "num_computed_tokens")


def overload(seed: int, n: int = 300, gap_s: float = 0.004, max_prompt: int = 200, max_output: int = 300,
             priorities: int = 1):
    """Open-loop requests without prefix keys arriving faster than they are served: a queue
    that never empties, with a head waiting for KV blocks (`priorities`: levels drawn)."""
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(gap_s, n))
    return [make_request(i, int(rng.integers(1, max_prompt)), int(rng.integers(1, max_output)), float(t[i]),
                         priority=int(rng.integers(0, priorities))) for i in range(n)]


def run(reqs, fast_forward: bool, num_blocks: int, perf, scheduler: str = "vllm", params: dict | None = None,
        defer_finishes: bool = True, **kw):
    cfg = dict(max_num_batched_tokens=2048, max_num_seqs=256)
    cfg.update(kw)
    engine, _, kv, loop, _ = make_engine(num_blocks=num_blocks, fast_forward=fast_forward, perf=perf,
                                         scheduler=scheduler, defer_finishes=defer_finishes, params=params, **cfg)
    serve(engine, loop, reqs)
    kv.check_all_free()
    return engine


@pytest.fixture(scope="module")
def llama():
    return build_perf_model("llama-3.1-8b", "h100-sxm")


@pytest.mark.parametrize("seed,num_blocks", [(1, 1000), (2, 600), (3, 300), (4, 200)])
@pytest.mark.parametrize("perf_name", ["toy", "llama"])
def test_admissions_inside_stretches_match_stepping(seed, num_blocks, perf_name, llama):
    perf = ToyPerf() if perf_name == "toy" else llama  # scalar decode form / affine forms (numpy chunks)
    a_reqs, b_reqs = overload(seed), overload(seed)
    a = run(a_reqs, True, num_blocks, perf)
    b = run(b_reqs, False, num_blocks, perf)
    assert_same_run(a, b, a_reqs, b_reqs, num_blocks, FIELDS)
    assert a.num_finish_admissions > 0.2 * len(a_reqs)  # many admissions happened inside stretches
    assert b.num_finish_admissions == 0
    print(seed, num_blocks, perf_name, a.num_finish_admissions, a.num_fast_forwarded_steps / a.num_steps)


# The policies whose admission under a blocked head is vLLM's in a fixed key order (hygen:
# online requests only, in queue order; continuum: standalone requests, in arrival order, a
# preempted one re-entering by its arrival; trtllm: GUARANTEED_NO_EVICT's reservations, in
# arrival order).
KEYED = [("priority", {}, 1), ("priority", {}, 3), ("priority", {"preemption": False}, 3), ("edf", {}, 1),
         ("hygen", {}, 1), ("continuum", {}, 1), ("trtllm", {}, 1), ("trtllm", {"max_batch_size": 40}, 1)]


@pytest.mark.parametrize("scheduler,params,priorities", KEYED)
@pytest.mark.parametrize("seed,num_blocks", [(1, 1000), (3, 300), (4, 200)])
@pytest.mark.parametrize("perf_name", ["toy", "llama"])
def test_keyed_policies_admit_inside_stretches_exactly(scheduler, params, priorities, seed, num_blocks, perf_name,
                                                      llama):
    perf = ToyPerf() if perf_name == "toy" else llama
    a_reqs, b_reqs = overload(seed, priorities=priorities), overload(seed, priorities=priorities)
    a = run(a_reqs, True, num_blocks, perf, scheduler, params)
    b = run(b_reqs, False, num_blocks, perf, scheduler, params)
    assert_same_run(a, b, a_reqs, b_reqs, num_blocks, FIELDS)
    print(scheduler, params, priorities, seed, num_blocks, perf_name, a.num_finish_admissions,
          a.num_fast_forwarded_steps / a.num_steps)
    assert a.num_finish_admissions > 0.1 * len(a_reqs)


@pytest.mark.parametrize("seed,num_blocks", [(1, 1000), (4, 200)])
def test_hygen_with_offline_requests_stays_exact(seed, num_blocks):
    # offline requests held: the fill decides by predicted step time, so no admission stretch
    # while any is held (here until the online queue drains)
    a_reqs, b_reqs = overload(seed), overload(seed)
    for r in a_reqs[:60:3] + b_reqs[:60:3]:
        r.is_offline = True
    a = run(a_reqs, True, num_blocks, ToyPerf(), "hygen")
    b = run(b_reqs, False, num_blocks, ToyPerf(), "hygen")
    assert_same_run(a, b, a_reqs, b_reqs, num_blocks, FIELDS)
    assert a.num_finish_admissions == 0


@pytest.mark.parametrize("scheduler", ["vllm", "priority"])
def test_no_admission_stretch_without_deferred_finishes(scheduler):
    # a closed-loop workload reacts to finishes at once: stretches stop at the first finish
    a_reqs, b_reqs = overload(2), overload(2)
    a = run(a_reqs, True, 300, ToyPerf(), scheduler, defer_finishes=False)
    b = run(b_reqs, False, 300, ToyPerf(), scheduler, defer_finishes=False)
    assert_same_run(a, b, a_reqs, b_reqs, 300, FIELDS)
    assert a.num_finish_admissions == 0 and a.num_fast_forwarded_steps > 0


@pytest.mark.parametrize("seed,num_blocks", [(1, 1000), (4, 200)])
def test_continuum_with_a_program_call_stays_exact(seed, num_blocks):
    # once a call of a program has arrived (here all arrive before the queue forms) its finish
    # may pin and its queue order is its program's: no admission stretch from then on
    a_reqs, b_reqs = overload(seed), overload(seed)
    for r in (a_reqs[250], b_reqs[250]):
        r.program_id = 7
    a = run(a_reqs, True, num_blocks, ToyPerf(), "continuum")
    b = run(b_reqs, False, num_blocks, ToyPerf(), "continuum")
    assert_same_run(a, b, a_reqs, b_reqs, num_blocks, FIELDS)
    plain = run(overload(seed), True, num_blocks, ToyPerf(), "continuum")
    assert not a.scheduler.plain() and plain.scheduler.plain()
    assert a.num_finish_admissions == 0 < plain.num_finish_admissions


@pytest.mark.parametrize("seed,num_blocks", [(1, 1000), (3, 300)])
@pytest.mark.parametrize("params", [{}, {"max_num_tokens": 256}])
def test_trtllm_reservations_admit_inside_stretches_exactly(seed, num_blocks, params):
    # `max_tokens` above the output: each request reserves more blocks than it ever holds, so
    # the room a finish returns is its total, not its blocks (a smaller token budget keeps
    # prompts out by tokens too)
    a_reqs, b_reqs = overload(seed), overload(seed)
    rng = np.random.default_rng(seed)
    for a, b in zip(a_reqs, b_reqs):
        a.max_tokens = b.max_tokens = a.output_len + int(rng.integers(0, 200))
    a = run(a_reqs, True, num_blocks, ToyPerf(), "trtllm", params)
    b = run(b_reqs, False, num_blocks, ToyPerf(), "trtllm", params)
    assert_same_run(a, b, a_reqs, b_reqs, num_blocks, FIELDS)
    assert a.num_finish_admissions > 0.1 * len(a_reqs)


# Prompts that the budget left by the prompts before them chunks: admitted inside the stretch
# with that chunk, their rest run at the next step (or, when that step is not determined, the
# stretch ends holding the chunk), then they decode with the rest. A small token budget against
# long prompts makes them frequent; the long-prefill cap leaves some rests to stepping.
CHUNKED = [("vllm", {}, 1, {}), ("vllm", {}, 1, {"long_prefill_token_threshold": 300}),
           ("priority", {}, 1, {}), ("priority", {}, 3, {}), ("edf", {}, 1, {}), ("continuum", {}, 1, {}),
           ("hygen", {}, 1, {}), ("fastswitch", {}, 1, {})]


@pytest.mark.parametrize("scheduler,params,priorities,cfg", CHUNKED)
@pytest.mark.parametrize("seed,num_blocks", [(1, 1000), (3, 300), (5, 150)])
@pytest.mark.parametrize("perf_name", ["toy", "llama"])
def test_prompts_chunked_by_the_spent_budget_inside_stretches(scheduler, params, priorities, cfg, seed, num_blocks,
                                                              perf_name, llama, monkeypatch):
    from servesim.replica.admission_stretch import AdmitStretch

    chunks = []  # per first chunk applied: did its rest run inside the stretch?
    apply_chunks = AdmitStretch._apply_chunks

    def counted(st, k, frees, prefill_at):
        chunks.extend(s + 1 < k for s, _, _, _ in st.chunked if s < k)
        return apply_chunks(st, k, frees, prefill_at)

    monkeypatch.setattr(AdmitStretch, "_apply_chunks", counted)
    perf = ToyPerf() if perf_name == "toy" else llama
    a_reqs = overload(seed, max_prompt=400, priorities=priorities)
    b_reqs = overload(seed, max_prompt=400, priorities=priorities)
    a = run(a_reqs, True, num_blocks, perf, scheduler, params, max_num_batched_tokens=600, **cfg)
    b = run(b_reqs, False, num_blocks, perf, scheduler, params, max_num_batched_tokens=600, **cfg)
    assert_same_run(a, b, a_reqs, b_reqs, num_blocks, FIELDS)
    print(scheduler, params, priorities, cfg, seed, num_blocks, perf_name, sum(chunks), len(chunks),
          a.num_finish_admissions, a.num_fast_forwarded_steps / a.num_steps)
    assert len(chunks) >= 3  # prompts admitted with a first chunk inside stretches
    if not cfg:  # ... whose rests ran inside the stretch, and stretches that ended holding one
        assert sum(chunks) >= 5 and len(chunks) - sum(chunks) >= 3


def fast_and_stepped(seed: int, num_blocks: int, perf, scheduler: str, params: dict):
    """(the engines of `overload(seed)` fast-forwarded and stepped, checked to give the same run
    with every request's token steps; the requests)"""
    a_reqs, b_reqs = overload(seed), overload(seed)
    a = run(a_reqs, True, num_blocks, perf, scheduler, params)
    b = run(b_reqs, False, num_blocks, perf, scheduler, params)
    assert_same_run(a, b, a_reqs, b_reqs, num_blocks, FIELDS + ("token_steps",))
    return a, b, a_reqs


# Prefill-first (`vllm-v0`): a finish admits the head in a prompt-only step of the stretch, the
# decodes stalled in it (`Stretch.stall`), on the blocks free before that step's decodes take
# theirs; a head the blocks above the watermark or the sequence cap hold back waits to the next
# finish. Eight sequences make the cap the usual stop; swaps come back before any admission.
PREFILL_FIRST = [{}, {"watermark": 0.2}, {"max_num_seqs": 8}, {"preemption_mode": "swap"}]


@pytest.mark.parametrize("params", PREFILL_FIRST)
@pytest.mark.parametrize("seed,num_blocks", [(1, 1000), (3, 300), (4, 200)])
@pytest.mark.parametrize("perf_name", ["toy", "llama"])
def test_prefill_first_admits_inside_stretches_as_prompt_only_steps(params, seed, num_blocks, perf_name, llama):
    a, b, reqs = fast_and_stepped(seed, num_blocks, ToyPerf() if perf_name == "toy" else llama, "vllm-v0", params)
    print(params, seed, num_blocks, perf_name, a.num_finish_admissions, a.num_fast_forwarded_steps / a.num_steps)
    assert a.num_finish_admissions > 0.2 * len(reqs) and b.num_finish_admissions == 0
    # the admitting steps are in the step log as prompt-only steps: a prompt computed and fewer
    # tokens emitted than requests running
    log = a.recorder.step_log(num_blocks)
    assert ((log.prefill_tokens > 0) & (log.num_running > log.output_tokens + 1)).sum() > 0.1 * len(reqs)


# SGLang (prefill-first, `sglang_admits.py`): once the new-token ratio is at its floor a finish
# admits the head as a prompt-only step, by the PrefillAdder's tokens (the running requests'
# reserves, each admitted prompt's clipped `max_new`), `max_prefill_tokens` and the running cap;
# the step after the prompts admits afresh (`readmits_after_stall`). A ratio that decays in one
# decode step reaches the floor at once; 600 steps leave part of the run to stepping. Every
# reserve is clipped (SGLang's OpenAI default `max_new`, a long `max_model_len`), as on the traces.
SGLANG = [{"new_token_ratio_decay_steps": 1}, {"new_token_ratio_decay_steps": 1, "schedule_conservativeness": 3.0},
          {"new_token_ratio_decay_steps": 1, "max_prefill_tokens": 250},
          {"new_token_ratio_decay_steps": 1, "max_running_requests": 8}, {}]


@pytest.mark.parametrize("params", SGLANG)
@pytest.mark.parametrize("seed,num_blocks", [(1, 1000), (3, 300), (4, 200)])
@pytest.mark.parametrize("perf_name", ["toy", "llama"])
def test_sglang_finishes_admit_inside_stretches_at_the_ratios_floor(params, seed, num_blocks, perf_name, llama):
    perf = ToyPerf() if perf_name == "toy" else llama
    a_reqs, b_reqs = overload(seed), overload(seed)
    a = run(a_reqs, True, num_blocks, perf, "sglang", params, max_model_len=131072)
    b = run(b_reqs, False, num_blocks, perf, "sglang", params, max_model_len=131072)
    assert_same_run(a, b, a_reqs, b_reqs, num_blocks, FIELDS + ("token_steps",))
    print(params, seed, num_blocks, perf_name, a.num_finish_admissions, a.num_fast_forwarded_steps / a.num_steps)
    assert b.num_finish_admissions == 0
    if params:
        assert a.num_finish_admissions > 0.2 * len(a_reqs)
