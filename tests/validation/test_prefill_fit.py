"""Prefill constants fitted on low-concurrency rows (validation/prefill.py): which rows are fitted
and held out, and that the fit recovers constants the measurements were made with."""

from __future__ import annotations

import pytest

from servesim.validation import prefill
from servesim.validation.run import simulate_row
from servesim.validation.silicon import ClientOptions

from tests.validation.silicon_rows import silicon_row


def row(i, **changes):
    # each row its own measurement (a distinct TTFT) unless a test makes twins
    return silicon_row(i, **{"isl": "1024", "osl": "4", "silicon_ttft_ms": str(20 + i), **changes})


def test_groups_hold_low_concurrency_rows_split_by_measurement():
    rows = [row(0), row(1), row(2, concurrency="9", batch_size="9"), row(3, backend="sglang"), row(4),
            row(5, system="b200_sxm"), row(6, mode="disagg")]
    groups = prefill.low_concurrency_groups(rows, ("vllm",))
    assert list(groups) == [("vllm", "b200_sxm"), ("vllm", "h100_sxm")]
    fit, held_out = groups[("vllm", "h100_sxm")]
    assert [r.id for r in fit] == ["r0", "r4"] and [r.id for r in held_out] == ["r1"]  # r2: 9 users
    assert [r.id for r in groups[("vllm", "b200_sxm")][1]] == ["r5"]
    # r7 records r0's measurement under another id at an odd position: it is fitted with r0, not held out
    twin = row(7, silicon_ttft_ms="20")
    fit, held_out = prefill.low_concurrency_groups([*rows, twin], ("vllm",))[("vllm", "h100_sxm")]
    assert [r.id for r in fit] == ["r0", "r4", "r7"] and [r.id for r in held_out] == ["r1"]


def test_added_latency_adds_to_ttft_and_leaves_tpot():
    options = ClientOptions(min_requests=2, requests_per_user=1)
    start = prefill.shipped_values(row(0), options)
    base = prefill.errors([row(0, concurrency="1", batch_size="1")], options, start)
    later = prefill.errors([row(0, concurrency="1", batch_size="1")], options, {**start, "latency_add_s": 0.02})
    assert later.ttft[0] - base.ttft[0] == pytest.approx(0.02 / 0.020)  # +20 ms on a 20 ms measurement
    # (the release schedules asynchronously, max(CPU, GPU): the shifted clock leaves TPOT equal up to float rounding)
    assert later.tpot == pytest.approx(base.tpot, rel=1e-12)


def test_fit_recovers_the_prefill_efficiency_and_latency_of_the_measurements(monkeypatch):
    # measurements made by servesim itself with large-M GEMMs at 0.9 of peak and 40 ms more front end
    monkeypatch.setattr(prefill, "PREFILL_GRID", {"eta_compute_large_m": (0.0, 0.7, 0.9), "eta_attn_compute": (0.5,),
                                                  "ar_bw_eff": (0.75,), "latency_add_s": (0.0, 0.02, 0.04, 0.08)})
    options = ClientOptions(min_requests=2, requests_per_user=1)
    shapes = [(512, 1), (8192, 1), (2048, 2), (4096, 1), (1024, 2), (6144, 1)]
    rows = [row(i, isl=str(isl), concurrency=str(c), batch_size=str(c)) for i, (isl, c) in enumerate(shapes)]
    truth = {**prefill.shipped_values(rows[0], options), "eta_compute_large_m": 0.9, "latency_add_s": 0.04}
    measured = []
    for r in rows:
        latency_s = prefill.row_scenario(r, options).frontend.constants()[2] + 0.04
        sim = simulate_row(r, options, overrides={k: truth[k] for k in prefill.PERF_NAMES}, frontend={"latency_s": latency_s})
        measured.append(row(0, **{"id": r.id, "isl": str(r.isl), "concurrency": str(r.concurrency),
                                   "batch_size": str(r.batch_size), "silicon_ttft_ms": str(sim.ttft_s * 1e3),
                                   "silicon_tpot_ms": str(sim.tpot_s * 1e3)}))
    logs: list[str] = []
    fitted = prefill.fit_prefill(measured, ("vllm",), options, log=logs.append)
    assert fitted[("vllm", "h100_sxm")]["eta_compute_large_m"] == 0.9
    assert fitted[("vllm", "h100_sxm")]["latency_add_s"] == 0.04
    assert len(logs) == 1 and "held out (3 rows)" in logs[0] and "-> 0.0%" in logs[0]
    (entry,) = prefill.calibration_entries(fitted)
    assert entry.match == {"gpu": "h100-sxm", "engine": "vllm"} and entry.values["eta_compute_large_m"] == 0.9
