"""Prefill constants per engine release fitted on every concurrency (validation/waves.py): which rows
each key fits and holds out, the entries it writes, and that the fit recovers the constants a set of
measurements was made with."""

from __future__ import annotations

from servesim.validation import prefill, waves
from servesim.validation.run import simulate_row
from servesim.validation.silicon import ClientOptions

from tests.validation.silicon_rows import silicon_row


def row(i, **changes):
    return silicon_row(i, **{"backend": "trtllm", "isl": "1024", "osl": "4", **changes})


def test_release_keys_then_a_gpu_fallback_for_the_rest():
    # 1.0 has 4 rows (a key at min_rows 4): even r0, r2 fit, odd r1, r3 held out. The others fall back.
    rows = [row(0, backend_version="1.0"), row(1, backend_version="1.0"), row(2, backend_version="1.0", concurrency="64",
            batch_size="64"), row(3, backend_version="1.0"), row(4, backend_version=""), row(5, backend_version="1.1"),
            row(6, backend_version="1.1"), row(7, backend="vllm"), row(8, mode="disagg")]
    keys = waves.wave_keys(rows, ("trtllm",), min_rows=4)
    assert list(keys) == [("trtllm", "h100_sxm", "1.0"), ("trtllm", "h100_sxm", "")]
    assert [r.id for r in keys[("trtllm", "h100_sxm", "1.0")]] == ["r0", "r2"]  # every concurrency
    assert [r.id for r in keys[("trtllm", "h100_sxm", "")]] == ["r4", "r6"]
    assert [r.id for r in waves.held_out_rows(rows, ("trtllm", "h100_sxm", "1.0"), keys)] == ["r1", "r3"]
    assert [r.id for r in waves.held_out_rows(rows, ("trtllm", "h100_sxm", ""), keys)] == ["r5"]


def test_entries_match_the_release_or_the_gpu_and_name_the_profile_each_key_resolves():
    values = {"eta_compute_large_m": 0.9, "eta_attn_compute": 0.5, "ar_bw_eff": 1.0, "latency_add_s": 0.02}
    fitted = {("trtllm", "b200_sxm", "1.2"): values, ("trtllm", "h200_sxm", ""): {**values, "latency_add_s": 0.0}}
    a, b = prefill.calibration_entries(fitted)
    assert a.match == {"gpu": "b200", "engine": "trtllm", "version": "1.2"} and a.values == {
        "eta_compute_large_m": 0.9, "eta_attn_compute": 0.5, "ar_bw_eff": 1.0}
    assert b.match == {"gpu": "h200", "engine": "trtllm"}
    assert waves.frontend_additions(fitted) == {"trtllm@b200@1.2": 0.02, "trtllm@h200": 0.0}


def test_fit_recovers_the_prefill_efficiency_from_the_waves(monkeypatch):
    # measurements made by servesim itself with large-M GEMMs at 0.9 of peak: at 16 and 32 users the
    # waves of 4,096-token prompts (one per step) set the TTFT
    monkeypatch.setattr(prefill, "PREFILL_GRID", {"eta_compute_large_m": (0.0, 0.7, 0.9), "eta_attn_compute": (0.5,),
                                                  "ar_bw_eff": (0.75,), "latency_add_s": (0.0, 0.02)})
    options = ClientOptions(min_requests=2, requests_per_user=1)
    shapes = [(4096, 16), (2048, 32), (4096, 32), (1024, 16), (8192, 16), (2048, 16)]
    rows = [row(i, isl=str(isl), concurrency=str(c), batch_size=str(c)) for i, (isl, c) in enumerate(shapes)]
    truth = {k: v for k, v in prefill.shipped_values(rows[0], options).items() if k in prefill.PERF_NAMES}
    truth["eta_compute_large_m"] = 0.9
    measured = []
    for r in rows:
        sim = simulate_row(r, options, overrides=truth)
        measured.append(row(0, **{"id": r.id, "isl": str(r.isl), "concurrency": str(r.concurrency), "batch_size": str(r.batch_size),
                                   "silicon_ttft_ms": str(sim.ttft_s * 1e3), "silicon_tpot_ms": str(sim.tpot_s * 1e3)}))
    logs: list[str] = []
    fitted = waves.fit_waves(measured, ("trtllm",), options, min_rows=100, min_fit_rows=3, log=logs.append)
    assert list(fitted) == [("trtllm", "h100_sxm", "")]  # no release has 100 rows: the GPU fallback
    assert fitted[("trtllm", "h100_sxm", "")]["eta_compute_large_m"] == 0.9
    assert fitted[("trtllm", "h100_sxm", "")]["latency_add_s"] == 0.0
    assert len(logs) == 1 and "held out (3 rows)" in logs[0] and "-> TTFT 0.0%" in logs[0]
