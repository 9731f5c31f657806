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


def test_fallback_rows_are_the_even_rows_no_release_key_covers():
    from servesim.validation.versions import fallback_rows

    rows = ([row(i, backend="trtllm", backend_version="1.0.0rc3") for i in range(20)]
            + [row(20 + i, backend="trtllm", backend_version="1.1.0rc2.post2") for i in range(5)]
            + [row(25 + i, backend="trtllm", backend_version="") for i in range(4)]
            + [row(29 + i, backend="vllm", backend_version="") for i in range(4)])
    groups = fallback_rows(rows, ("trtllm",), min_rows=20)
    # 1.0.0rc3 has its own key; the small release and the unversioned runs share the (GPU, engine) fit
    assert list(groups) == [("trtllm", "h100_sxm")]
    assert [r.id for r in groups[("trtllm", "h100_sxm")]] == ["r20", "r22", "r24", "r26", "r28"]


def test_fallback_fit_recovers_gpu_time_per_layer():
    # measurements made by servesim with 4x the GPU time per layer, one run without a version (CPU
    # time adds) and one of a release that overlaps CPU and GPU: one per-GPU value fits both
    from servesim.perf import build_perf_model
    from servesim.validation.silicon import row_scenario
    from servesim.validation.versions import fit_fallback

    options = ClientOptions(min_requests=4, requests_per_user=2)
    rows = [row(i, backend="trtllm", backend_version=("", "1.1.0rc2.post2")[i % 2], isl=str(64 * (1 + i // 2)),
                concurrency=str(1 + i // 2), batch_size=str(1 + i // 2)) for i in range(4)]
    s = row_scenario(rows[0], options)
    start = build_perf_model(s.model, s.gpu, s.tp, s.dtype, s.perf).constants.layer_floor_s
    measured = []
    for r in rows:
        sim = simulate_row(r, options, overrides={"layer_floor_s": 4.0 * start})
        measured.append(row(0, **{"id": r.id, "backend": "trtllm", "backend_version": r.version, "isl": str(r.isl),
                                   "concurrency": str(r.concurrency), "batch_size": str(r.batch_size),
                                   "silicon_ttft_ms": str(sim.ttft_s * 1e3), "silicon_tpot_ms": str(sim.tpot_s * 1e3)}))
    # every row is fitted here: odd positions are held out, so interleave copies at odd positions
    padded = [x for m in measured for x in (m, m)]
    (entry,) = fit_fallback(padded, ("trtllm",), options, min_fit_rows=1)
    assert fit_fallback(padded, ("trtllm",), options, min_fit_rows=5) == []  # too few rows: constants kept
    assert entry.match == {"gpu": "h100-sxm", "engine": "trtllm"}
    assert entry.values == {"layer_floor_s": pytest.approx(round(4.0 * start, 6))}
