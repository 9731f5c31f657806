"""Speculative steps priced by their work (`perf/spec_price.py`, `EngineConfig.spec_draft_layers`)."""

from __future__ import annotations

import pytest

from servesim.perf.build import build_perf_model
from servesim.perf.spec_price import draft_s, verify_logits_s


@pytest.fixture(scope="module")
def pm():
    return build_perf_model("deepseek-r1", "b200", tp=8, dtype="fp8")


def test_lm_head_is_its_gemm_plus_the_per_sequence_time(pm):
    for rows in (1, 8, 512):
        assert pm.terms.lm_head_s(rows) == pm.terms.lm_head_gemm_s(rows) + pm.terms.c.seq_gpu_s * rows


def test_verify_logits_cost_what_the_extra_rows_of_the_head_cost(pm):
    assert verify_logits_s(pm, 16, 0) == 0.0
    t = pm.terms
    assert verify_logits_s(pm, 16, 48) == t.lm_head_gemm_s(64) - t.lm_head_gemm_s(16)
    # a memory-bound head: 48 more rows beside 16 cost little; 1,536 beside 512 cost more than that
    assert 0.0 < verify_logits_s(pm, 16, 48) < verify_logits_s(pm, 512, 1536)


def test_one_draft_layer_costs_a_layer_and_a_head_per_draft_token(pm):
    ctxs = [1000] * 8
    one = draft_s(pm, 1, 1, ctxs)
    assert draft_s(pm, 1, 3, ctxs) == pytest.approx(3 * one)
    decode = pm.step_time_s([], ctxs)
    layers = pm.terms.model.num_layers
    # more than one of the target's layers, far less than the whole decode step (61 layers + head)
    assert decode / layers < one < 0.2 * decode
    assert draft_s(pm, 2, 1, ctxs) - one == pytest.approx(one - pm.terms.lm_head_gemm_s(8))


def test_a_work_priced_step_adds_the_extra_logits_and_the_drafts(pm):
    from servesim.replica.spec_decode import speculate
    from tests.factories import make_engine, make_request

    engine, sched, kv, *_ = make_engine(perf=pm, num_speculative_tokens=3, spec_draft_layers=1)
    reqs = [make_request(i, 64, 50) for i in range(4)]
    for r in reqs:
        assert kv.allocate_slots(r, 64)
        r.num_computed_tokens, r.num_output_tokens = 64, 1
    dt, plain, items = speculate(engine, reqs, [64] * 4, [], [])
    assert plain == [] and len(items) == 4
    verify = pm.step_time_s([(4, 64)] * 4, [], 4)
    assert dt == verify + (verify_logits_s(pm, 4, 12) + draft_s(pm, 1, 3, [64] * 4))
