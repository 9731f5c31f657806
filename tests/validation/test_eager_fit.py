"""SGLang's eager prefill steps fitted per (GPU, engine) (validation/eager.py): which rows fit and
which are held out, the entries it writes, and that the fit recovers the constants a set of
measurements was made with."""

from __future__ import annotations

from servesim.validation import eager
from servesim.validation.run import simulate_row
from servesim.validation.silicon import ClientOptions

from tests.validation.silicon_rows import silicon_row


def row(i, **changes):
    return silicon_row(i, **{"backend": "sglang", "backend_version": "", "isl": "1024", "osl": "16", **changes})


def test_even_rows_fit_odd_rows_are_held_out_per_engine_and_system():
    rows = [row(0), row(1), row(2, system="h200_sxm"), row(3), row(4), row(5, backend="vllm"), row(6, mode="disagg"), row(7)]
    even, odd = eager.split_rows(rows, "sglang", "h100_sxm")
    assert [r.id for r in even] == ["r0", "r4"]
    assert [r.id for r in odd] == ["r1", "r3", "r7"]


def test_entries_match_the_gpu_and_engine():
    fitted = {("sglang", "b200_sxm"): {"eager_layer_s": 0.4e-3, "step_overhead_s": 0.004, "seq_gpu_s": 15e-6,
                                       "latency_add_s": -0.04}}
    (entry,) = eager.calibration_entries(fitted)
    assert entry.match == {"gpu": "b200", "engine": "sglang"}
    assert entry.values == {"eager_layer_s": 0.0004, "step_overhead_s": 0.004, "seq_gpu_s": 1.5e-05}


def test_fit_recovers_the_eager_time_and_the_front_end_it_replaces(monkeypatch):
    # measurements made by servesim itself with eager prefill steps of 0.4 ms a layer and a front end
    # 40 ms slower than the shipped one: prefills of 1,024-4,096 tokens among 4-16 decoding users
    grid = {"eager_layer_s": (0.0, 0.2e-3, 0.4e-3), "step_overhead_s": (0.002,), "seq_gpu_s": (0.0,),
            "latency_add_s": (0.0, 0.04)}
    options = ClientOptions(min_requests=4, requests_per_user=1)
    shapes = [(1024, 4), (2048, 8), (4096, 4), (1024, 16), (2048, 4), (4096, 8)]
    rows = [row(i, isl=str(isl), concurrency=str(c), batch_size=str(c)) for i, (isl, c) in enumerate(shapes)]
    start = eager.shipped_values(rows[0], options)
    assert start["eager_layer_s"] == 0.0
    truth = {"eager_layer_s": 0.4e-3, "step_overhead_s": 0.002, "seq_gpu_s": 0.0}
    fe_latency = max(0.0, eager.row_scenario(rows[0], options).frontend.constants()[2] + 0.04)
    measured = []
    for r in rows:
        sim = simulate_row(r, options, overrides=truth, frontend={"latency_s": fe_latency})
        measured.append(row(0, **{"id": r.id, "isl": str(r.isl), "concurrency": str(r.concurrency), "batch_size": str(r.batch_size),
                                   "silicon_ttft_ms": str(sim.ttft_s * 1e3), "silicon_tpot_ms": str(sim.tpot_s * 1e3)}))
    logs: list[str] = []
    fitted = eager.fit_eager(measured, ("h100_sxm",), options=options, grid=grid, log=logs.append)
    values = fitted[("sglang", "h100_sxm")]
    assert values["eager_layer_s"] == 0.4e-3
    assert values["latency_add_s"] == 0.04
    assert len(logs) == 1 and "held out (3 rows)" in logs[0] and "-> 0.0%" in logs[0]
