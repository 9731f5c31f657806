"""Time series cost memory in proportion to what happened, not to the simulated span."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from servesim import load_scenario, simulate
from servesim.errors import InputError
from servesim.metrics.recorder import StepLog
from servesim.metrics.timeseries import timeseries


def _steps(spans: list[tuple[float, float]], running: list[int]) -> StepLog:
    starts, ends = (np.array(x, dtype=float) for x in zip(*spans))
    n = len(spans)
    return StepLog(start_s=starts, end_s=ends, prefill_tokens=np.full(n, 10.0), output_tokens=np.ones(n),
                   num_running=np.array(running, dtype=float), num_waiting=np.zeros(n),
                   kv_used_blocks=np.full(n, 5.0), num_gpu_blocks=10)


def test_idle_gap_of_several_intervals_is_one_row():
    steps = _steps([(0.2, 0.7), (5.1, 5.3), (6.5, 6.6)], [2, 1, 1])
    ts = timeseries([steps], np.array([0.1, 5.0, 6.4]), np.array([0.7, 5.3, 6.6]), 1.0)
    assert ts["time_s"].tolist() == [0.0, 1.0, 5.0, 6.0]
    assert ts["interval_s"].tolist() == [1.0, 4.0, 1.0, 1.0]
    assert ts["arrivals"].tolist() == [1, 0, 1, 1] and ts["finished"].tolist() == [1, 0, 1, 1]
    assert ts["prompt_tokens"].tolist() == [10, 0, 10, 10]
    assert ts["num_running"] == pytest.approx([2 * 0.5, 0.0, 0.2, 0.1])
    assert ts["kv_usage"] == pytest.approx([0.5 * 0.5, 0.0, 0.5 * 0.2, 0.5 * 0.1])


def test_single_idle_interval_keeps_its_own_row():
    steps = _steps([(0.2, 0.7), (2.1, 2.3)], [1, 1])
    ts = timeseries([steps], np.array([0.1, 2.0]), np.array([0.7, 2.3]), 1.0)
    assert ts["time_s"].tolist() == [0.0, 1.0, 2.0] and ts["interval_s"].tolist() == [1.0, 1.0, 1.0]


def _two_requests(tmp_path, gap_s: str):
    trace = tmp_path / "t.csv"
    trace.write_text(f"arrival_s,prompt_len,output_len\n0,100,10\n{gap_s},100,10\n")
    return load_scenario(None, [f"workload.trace.name={trace}"])


def test_two_requests_1e7_s_apart_run_in_small_memory(tmp_path):
    scenario = _two_requests(tmp_path, "1e7")
    tracemalloc.start()
    try:
        result = simulate(scenario)
        ts = result.timeseries()
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert ts["time_s"].tolist() == [0.0, 1.0, 1e7] and ts["interval_s"].tolist() == [1.0, 1e7 - 1, 1.0]
    assert ts["arrivals"].sum() == 2
    assert peak_bytes < 20e6  # a dense series would be 1e7 rows x 9 columns x 8 bytes = 720 MB


def test_arrival_beyond_the_time_limit_is_one_clear_error(tmp_path):
    with pytest.raises(InputError, match=r"request 1 arrives at 1e\+308 s, beyond the limit of 1e\+09 s"):
        simulate(_two_requests(tmp_path, "1e308"))
