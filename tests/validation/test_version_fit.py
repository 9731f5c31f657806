"""Per-release fit (validation/versions.py): which keys are fitted, on which rows, and that the fit
recovers a step overhead the measurements were made with."""

from __future__ import annotations

import pytest

from servesim.validation.run import simulate_row
from servesim.validation.silicon import ClientOptions
from servesim.validation.versions import fit_key, version_keys

from tests.validation.silicon_rows import silicon_row as row


def test_keys_need_enough_rows_and_a_recorded_version_and_fit_even_positions():
    rows = ([row(i) for i in range(20)] + [row(20 + i, backend_version="0.16.0") for i in range(19)]
            + [row(40 + i, backend_version="") for i in range(30)])
    keys = version_keys(rows, ("vllm",), min_rows=20)
    assert list(keys) == [("vllm", "h100_sxm", "0.18.0")]  # 0.16.0 has 19 rows; '' is the fallback
    assert [r.id for r in keys[("vllm", "h100_sxm", "0.18.0")]] == [f"r{i}" for i in range(0, 20, 2)]
    assert version_keys(rows, ("sglang",)) == {}


def test_fit_recovers_the_step_overhead_of_the_measurements():
    # measurements made by servesim itself with twice the shipped step overhead: the fit finds x2
    # (a release before vLLM's async scheduling, so the CPU time adds to every step)
    options = ClientOptions(min_requests=4, requests_per_user=2)
    rows = [row(i, isl=str(64 * (i + 1)), concurrency=str(1 + i), batch_size=str(1 + i), backend_version="0.11.2")
            for i in range(3)]
    from servesim.perf import build_perf_model
    from servesim.validation.silicon import row_scenario
    s = row_scenario(rows[0], options)
    start = build_perf_model(s.model, s.gpu, s.tp, s.dtype, s.perf).constants.step_overhead_s
    truth = {"step_overhead_s": 2.0 * start}
    measured = []
    for r in rows:
        sim = simulate_row(r, options, overrides=truth)
        measured.append(row(0, **{"id": r.id, "backend_version": "0.11.2", "isl": str(r.isl), "concurrency": str(r.concurrency),
                                   "batch_size": str(r.batch_size), "silicon_ttft_ms": str(sim.ttft_s * 1e3),
                                   "silicon_tpot_ms": str(sim.tpot_s * 1e3)}))
    perf, frontend, tpot_score, ttft_score = fit_key(measured, options)
    assert perf == {"step_overhead_s": pytest.approx(round(2.0 * start, 6))}
    assert tpot_score == pytest.approx(0.0, abs=1e-6)
    assert set(frontend) == {"request_s", "prompt_token_s", "latency_s"} and ttft_score < 0.05


def test_overlapping_engines_fit_gpu_time_per_layer():
    from servesim.validation.versions import step_constant

    # SGLang's overlap scheduler hides CPU time behind the GPU step: per-step time is GPU-side
    assert step_constant(1.0) == "layer_floor_s" and step_constant(0.0) == "step_overhead_s"
