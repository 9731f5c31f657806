"""The step logs reduced in a helper process give the bytes of the in-process reduction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from servesim import load_scenario, simulate
from servesim.metrics import step_helper
from servesim.metrics.step_reduce import StepReducer

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not step_helper.helper_wanted(), reason="no fork or a single core")


def _scenario():
    # 8 replicas, 3 or 4 full step buffers each: the helper forks and reduces most steps
    return load_scenario(ROOT / "examples/cluster-azure-conv.yaml", ["workload.num_requests=2500"])


def _outputs(result) -> tuple[str, dict[str, bytes]]:
    series = {k: np.ascontiguousarray(v).tobytes() for k, v in result.timeseries().items()}
    summary = result.summary()
    assert summary.pop("wall_time_s") > 0  # (the one field that may differ)
    return json.dumps(summary, sort_keys=True, default=str), series


def _run(monkeypatch, helper: bool, keep_requests: bool = False):
    started = []
    real = step_helper.ReducerHelper

    class Counted(real):
        def finish(self):
            started.append(self.num_buffers)
            return super().finish()

    monkeypatch.setattr("servesim.simulation.helper_wanted", lambda: helper)
    monkeypatch.setattr("servesim.simulation.ReducerHelper", Counted)
    result = simulate(_scenario(), keep_requests=keep_requests)
    return result, started


def test_summary_and_time_series_are_the_in_process_bytes(monkeypatch):
    here, none = _run(monkeypatch, helper=False)
    there, sent = _run(monkeypatch, helper=True)
    assert none == [] and sent and sent[0] >= 24  # the buffers went to the helper (3 or more full ones a replica)
    assert _outputs(there) == _outputs(here)
    assert there.summary()["num_steps"] > 24 * 16384


def test_a_short_run_reduces_its_last_buffers_in_process_without_forking(monkeypatch):
    # 8 replicas, none fills a buffer of 16,384 steps: each hands on only its last, partial one
    forks = []
    monkeypatch.setattr(step_helper.ReducerHelper, "_start", lambda self: forks.append(1))
    monkeypatch.setattr("servesim.simulation.helper_wanted", lambda: True)
    short = load_scenario(ROOT / "examples/cluster-azure-conv.yaml", ["workload.num_requests=300"])
    there = simulate(short)
    monkeypatch.setattr("servesim.simulation.helper_wanted", lambda: False)
    here = simulate(short)
    assert forks == [] and 8 < there.summary()["num_steps"] < 8 * 16384
    assert _outputs(there) == _outputs(here)


def test_a_failure_in_the_helper_fails_the_run_with_its_traceback(monkeypatch):
    def broken(self, log):
        raise ValueError("reducer broke")

    monkeypatch.setattr(StepReducer, "add", broken)  # (inherited by the forked child)
    with pytest.raises(RuntimeError, match="(?s)helper process failed.*ValueError: reducer broke"):
        _run(monkeypatch, helper=True)


def test_a_sweeps_worker_process_reduces_in_process():
    import concurrent.futures as cf

    assert step_helper.helper_wanted()  # (this process: the module's skip says so)
    with cf.ProcessPoolExecutor(1) as pool:
        assert pool.submit(step_helper.helper_wanted).result() is False


def test_a_process_running_other_threads_reduces_in_process():
    # (a server's or a Ray worker's threads: a fork would copy none of them, nor free their locks)
    import threading

    assert step_helper.helper_wanted()
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert step_helper.helper_wanted() is False
    finally:
        stop.set()
        other.join()
    assert step_helper.helper_wanted()
