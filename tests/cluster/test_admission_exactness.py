"""Admission stretches (`replica/admission_stretch.py`) in a cluster: with a router that reads
every field of every replica's view at every arrival (KV blocks in use while departed requests
have released theirs inside a stretch, running and waiting counts while the queue head joins
it), fast-forward gives exactly the results of stepping, and admissions inside stretches happen."""

from __future__ import annotations

import pytest

import servesim.replica.admission_stretch as admission
import servesim.replica.finish_admission as finish_admission

from .helpers import assert_same_steps, outcome, reads_everything, run  # noqa: F401  (fixture)


@pytest.mark.parametrize("scheduler", ["vllm", "priority", "edf", "hygen", "batchllm", "continuum", "trtllm"])
@pytest.mark.parametrize("rate", [40, 80])
def test_admissions_inside_stretches_are_exact_with_a_state_reading_router(scheduler, rate, reads_everything,
                                                                           monkeypatch):
    admitted = []
    join = finish_admission._join
    monkeypatch.setattr(finish_admission, "_join", lambda engine, st, s, n, joins, now_s, pending=None: (
        admitted.extend(joins), join(engine, st, s, n, joins, now_s, pending)))
    sets = [f"router.name={reads_everything}", f"scheduler.name={scheduler}", f"workload.arrival.rate_per_s={rate}"]
    fast = run(sets)
    slow_admitted = len(admitted)
    slow = run(sets, fast_forward=False)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert len(admitted) == slow_admitted > 0.1 * len(fast.requests)  # many finishes admitted inside stretches


@pytest.mark.parametrize("scheduler", ["vllm", "priority", "hygen"])
def test_prompts_chunked_inside_stretches_are_exact_with_a_state_reading_router(scheduler, reads_everything,
                                                                                monkeypatch):
    # a small token budget: prompts the budget left chunks are admitted inside stretches with
    # their first chunk (the views count it from the step after), their rest run at the next step
    chunks = []
    apply_chunks = admission.AdmitStretch._apply_chunks
    monkeypatch.setattr(admission.AdmitStretch, "_apply_chunks", lambda st, k, frees, prefill_at: (
        chunks.extend(s + 1 < k for s, _, _, _ in st.chunked if s < k), apply_chunks(st, k, frees, prefill_at))[1])
    sets = [f"router.name={reads_everything}", f"scheduler.name={scheduler}", "workload.arrival.rate_per_s=80",
            "engine.max_num_batched_tokens=1024"]
    fast = run(sets)
    slow = run(sets, fast_forward=False)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    print(sum(chunks), len(chunks))
    assert len(chunks) >= 10 and sum(chunks) >= 3  # first chunks admitted inside stretches, some rests run there
