"""Speculative stretches priced a block of steps at a time with numpy (`replica/spec_blocks.py`)
give exactly the results of stepping one by one, with the real perf model."""

from __future__ import annotations

import numpy as np
import pytest

import servesim.replica.spec_stretch_pricing as spec_stretch_pricing
from servesim.perf import build_perf_model
from servesim.perf.config import PerfConfig
from tests.factories import make_engine, make_request, serve
from tests.replica.test_spec_fast_forward import assert_same_spec_run

PERF = {engine: build_perf_model("llama-3.1-8b", "h100-sxm", config=PerfConfig(engine=engine))
        for engine in ("vllm", "sglang")}  # the CPU time added to the GPU's, and overlapped with it


@pytest.mark.parametrize("engine", sorted(PERF))
@pytest.mark.parametrize("n,t", [(1, 1), (3, 2), (16, 4), (40, 6)])
def test_verify_step_times_equal_the_scalar_step_times(engine, n, t):
    perf = PERF[engine]
    rng = np.random.default_rng(n * 10 + t)
    batches = [rng.integers(0, 30_000, n).tolist() for _ in range(50)]
    got = perf.verify_step_times_s(n, t, np.array([sum(b) for b in batches]))
    want = [perf.step_time_s([(t, c) for c in b], []) for b in batches]
    assert got.tolist() == want  # bit for bit
    fn = perf.verify_time_fn(n, t)  # the scalar form `SpecStretch._step` uses
    assert [fn(sum(b)) for b in batches] == want and fn((1 << 52) // (2 * t) + 1) is None


def test_sliding_window_models_have_no_verify_form():
    perf = build_perf_model("mistral-7b", "h100-sxm")
    assert perf.verify_step_times_s(2, 4, np.array([10, 20])) is None and perf.verify_time_fn(2, 4) is None


@pytest.fixture
def blocks(monkeypatch):
    """Every block priced, as (steps kept, out of blocks)."""
    seen: list[tuple[int, bool]] = []
    real = spec_stretch_pricing.regular_block

    def spy(*args, **kw):
        b = real(*args, **kw)
        seen.append((b.m, b.out_of_blocks))
        return b

    monkeypatch.setattr(spec_stretch_pricing, "regular_block", spy)
    return seen


def run(reqs, ff: bool, engine: str, num_blocks: int, defer: bool = False):
    eng, _, kv, loop, _ = make_engine(num_blocks=num_blocks, perf=PERF[engine], max_num_batched_tokens=2048,
                                      max_num_seqs=16, num_speculative_tokens=3, spec_acceptance_rate=0.7,
                                      rng=np.random.default_rng(11), fast_forward=ff, defer_finishes=defer)
    serve(eng, loop, reqs)
    eng.drain(loop.now_s)
    kv.check_all_free()
    return eng


def long_requests(n: int, spacing_s: float = 0.0):
    return [make_request(i, 300 + 50 * i, 1500 - 60 * i, spacing_s * i) for i in range(n)]


@pytest.mark.parametrize("engine", sorted(PERF))
@pytest.mark.parametrize("n,spacing_s,defer", [(1, 0.0, False), (6, 0.0, True), (6, 0.0, False), (12, 0.7, True)])
def test_block_priced_stretches_match_stepping(blocks, engine, n, spacing_s, defer):
    a_reqs, b_reqs = long_requests(n, spacing_s), long_requests(n, spacing_s)
    a = run(a_reqs, True, engine, 4000, defer)
    b = run(b_reqs, False, engine, 4000)
    assert_same_spec_run(a, b, a_reqs, b_reqs, 4000)
    assert sum(m for m, _ in blocks) > 0.3 * a.num_steps  # a large share of the steps was priced in blocks


def test_a_block_stops_where_the_free_blocks_run_out(blocks):
    """Few KV blocks: a block ends before the step that would not fit, as stepping decides."""
    a_reqs, b_reqs = long_requests(6), long_requests(6)
    a = run(a_reqs, True, "vllm", 420)
    b = run(b_reqs, False, "vllm", 420)
    assert_same_spec_run(a, b, a_reqs, b_reqs, 420)
    assert any(out for _, out in blocks)
    assert sum(r.num_preemptions for r in b_reqs) > 0
