"""The step logs reduced in a helper process give the bytes of the in-process reduction."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from servesim import load_scenario, simulate
from servesim.metrics import step_helper
from servesim.metrics.step_reduce import StepReducer

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not step_helper.helper_wanted(), reason="no fork or a single core")
SHIPPED_FORK_AT = step_helper.ReducerHelper.FORK_AT_STEPS  # (read before the fixture below changes it)


@pytest.fixture(autouse=True)
def _fork_at_the_first_buffer(monkeypatch):
    # (these tests were written for a helper that forks at the first full buffer; the late fork
    # of longer runs has its own tests below)
    monkeypatch.setattr(step_helper.ReducerHelper, "FORK_AT_STEPS", 0)


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
    assert here.itl is None and there.itl() == there.summary()["itl_s"]  # (the gaps were reduced in the helper)


@pytest.mark.parametrize("keep_requests", [True, False])
def test_the_table_closes_while_the_helper_reduces_its_last_buffers(monkeypatch, keep_requests):
    """The end goes down the pipe before the request table closes (its runs indexed by the
    recorders' step counts) and the reducers are read after: the same rows, token runs and
    summary as an in-process reduction."""
    import servesim.simulation as simulation

    order = []
    real_close, real = simulation.close_table, step_helper.ReducerHelper

    class Ordered(real):
        def end(self):
            order.append("end")
            return super().end()

        def finish(self):
            order.append("finish")
            return super().finish()

    monkeypatch.setattr("servesim.simulation.close_table", lambda *a: order.append("close") or real_close(*a))
    monkeypatch.setattr("servesim.simulation.helper_wanted", lambda: False)
    here = simulate(_scenario(), keep_requests=keep_requests)
    assert order == ["close"]
    order.clear()
    monkeypatch.setattr("servesim.simulation.helper_wanted", lambda: True)
    monkeypatch.setattr("servesim.simulation.ReducerHelper", Ordered)
    there = simulate(_scenario(), keep_requests=keep_requests)
    assert order[:3] == ["end", "close", "finish"]
    assert [r.stats.num_steps for r in there.replicas] == [r.stats.num_steps for r in here.replicas]
    for name in ("run_starts", "run_ends", "first_run", "replica", "finish_s"):
        a, b = getattr(there.table, name, None), getattr(here.table, name, None)
        if a is None:
            a, b = there.table.cols[name], here.table.cols[name]
        assert np.array_equal(a, b), name
    if keep_requests:
        assert [q.token_steps for q in there.requests] == [q.token_steps for q in here.requests]
        assert max(q.token_steps[-1] for q in there.requests) > there.replicas[0].stats.num_steps  # (globalised)
    assert _outputs(there) == _outputs(here)


def test_the_helper_finds_the_gaps_before_the_table_closes(monkeypatch, tmp_path):
    """The child sends the reducers back without waiting for the loop's process to read them
    (their pickles hold only the sums' used bins; the answers' pipe is widened) and goes on to
    the gaps' figures: they are there while the request table still closes (main's child waited
    with 2.1 MB in a 64 kB pipe until the close had ended), and the summary is the same."""
    import servesim.simulation as simulation

    marker = tmp_path / "gaps_found"
    real_stats, real_close = step_helper.values_stats, simulation.close_table
    seen = []

    def stats(values):  # (runs in the forked child)
        figures = real_stats(values)
        marker.write_text("found")
        return figures

    def close(*a):  # the table closes only once the child has found the gaps (or after a minute)
        for _ in range(6000):
            if marker.exists():
                break
            time.sleep(0.01)
        seen.append(marker.exists())
        return real_close(*a)

    monkeypatch.setattr(step_helper, "values_stats", stats)
    monkeypatch.setattr("servesim.simulation.close_table", close)
    monkeypatch.setattr("servesim.simulation.helper_wanted", lambda: True)
    there = simulate(_scenario())
    assert seen == [True]
    monkeypatch.setattr("servesim.simulation.helper_wanted", lambda: False)
    assert _outputs(there) == _outputs(simulate(_scenario()))


def test_gaps_reduced_in_the_helper_with_preemptions_are_the_in_process_bytes(monkeypatch):
    # two overloaded replicas (345 preemptions: requests with several token runs; the helper takes
    # the gaps with more than one replica), buffers of 1,024 steps so the helper forks early and
    # the gaps' watermarks move often
    from servesim.metrics.recorder import Recorder

    monkeypatch.setattr(Recorder, "CHUNK_STEPS", 1024)
    scenario = load_scenario(ROOT / "examples/azure-conv.yaml", ["workload.trace.speedup=20", "replicas=2",
                                                                 "router.name=least-requests",
                                                                 "workload.num_requests=6000"])
    monkeypatch.setattr("servesim.simulation.helper_wanted", lambda: False)
    here = simulate(scenario, keep_requests=False)
    monkeypatch.setattr("servesim.simulation.helper_wanted", lambda: True)
    there = simulate(scenario, keep_requests=False)
    assert here.itl is None and there.itl() is not None
    assert there.summary()["num_preemptions"] > 100
    assert _outputs(there) == _outputs(here)


def test_one_replica_joins_its_gaps_after_the_run_in_the_helper(monkeypatch):
    # with one replica the token runs' trips down the pipe cost more than the join they save:
    # none go; after the run the helper joins the spilled runs' files with the step ends
    from servesim.metrics.recorder import Recorder

    monkeypatch.setattr(Recorder, "CHUNK_STEPS", 1024)
    scenario = load_scenario(ROOT / "examples/azure-conv.yaml", ["workload.num_requests=3000"])
    monkeypatch.setattr("servesim.simulation.helper_wanted", lambda: False)
    here = simulate(scenario, keep_requests=False)
    runs = []
    monkeypatch.setattr(step_helper.ReducerHelper, "add_runs", lambda self, *a: runs.append(1))
    monkeypatch.setattr("servesim.simulation.helper_wanted", lambda: True)
    there = simulate(scenario, keep_requests=False)
    assert runs == [] and here.itl is None
    assert there.itl() == here.summary()["itl_s"] and there.itl()["p50"] is not None  # (joined in the child)
    assert _outputs(there) == _outputs(here)


def test_one_replica_with_its_rows_in_memory_sends_its_runs_once_after_the_run(monkeypatch):
    from servesim.metrics.recorder import Recorder

    monkeypatch.setattr(Recorder, "CHUNK_STEPS", 1024)
    scenario = load_scenario(ROOT / "examples/azure-conv.yaml", ["workload.num_requests=3000"])
    monkeypatch.setattr("servesim.simulation.helper_wanted", lambda: False)
    here = simulate(scenario)
    monkeypatch.setattr("servesim.simulation.helper_wanted", lambda: True)
    there = simulate(scenario)  # (keep_requests: the table in memory)
    assert not there.table.spilled and there.itl() == here.summary()["itl_s"]
    assert _outputs(there) == _outputs(here)


def test_step_ends_held_in_memory_are_left_to_the_summary_and_the_helper_ends(monkeypatch):
    # kept steps: the child has no step-end files to join, so it ends at once and the summary joins
    from servesim.metrics.recorder import Recorder

    monkeypatch.setattr(Recorder, "CHUNK_STEPS", 1024)
    scenario = load_scenario(ROOT / "examples/azure-conv.yaml", ["workload.num_requests=3000"])
    stopped = []
    real_stop = step_helper.ReducerHelper.stop
    monkeypatch.setattr(step_helper.ReducerHelper, "stop", lambda self: stopped.append(1) or real_stop(self))
    monkeypatch.setattr("servesim.simulation.helper_wanted", lambda: True)
    there = simulate(scenario, keep_requests=False, keep_steps=True)
    assert stopped and there.itl() is None
    monkeypatch.setattr("servesim.simulation.helper_wanted", lambda: False)
    here = simulate(scenario, keep_requests=False, keep_steps=True)
    assert _outputs(there) == _outputs(here)


def test_requests_moved_between_replicas_leave_the_gaps_to_the_join_after_the_run(monkeypatch):
    # a crash re-dispatches its requests: their runs index two replicas' logs, so the helper
    # gives the streamed gaps up and joins the runs (globalised in their files) and steps after the run
    from servesim.metrics.recorder import Recorder

    monkeypatch.setattr(Recorder, "CHUNK_STEPS", 1024)
    scenario = load_scenario(ROOT / "examples/cluster-faults.yaml")
    monkeypatch.setattr("servesim.simulation.helper_wanted", lambda: False)
    here = simulate(scenario, keep_requests=False)
    monkeypatch.setattr("servesim.simulation.helper_wanted", lambda: True)
    there = simulate(scenario, keep_requests=False)
    assert there.table.cols["num_reroutes"].any()
    assert there.itl() == here.summary()["itl_s"]
    assert _outputs(there) == _outputs(here)


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


def test_a_late_fork_goes_on_from_the_steps_reduced_before_it_with_the_same_bytes(monkeypatch):
    # the first 5 x 16,384 steps (of about 400,000) reduced in this process, the rest in the child,
    # which gets their step ends for the gaps it streams and the reducers' state by the fork
    monkeypatch.setattr(step_helper.ReducerHelper, "FORK_AT_STEPS", 5 * 16384)
    here_before = []
    real = step_helper.ReducerHelper

    class Counted(real):
        def finish(self):
            here_before.append((self.steps_here, self.num_buffers))
            return super().finish()

    monkeypatch.setattr("servesim.simulation.ReducerHelper", Counted)
    monkeypatch.setattr("servesim.simulation.helper_wanted", lambda: True)
    there = simulate(_scenario())
    monkeypatch.setattr("servesim.simulation.helper_wanted", lambda: False)
    here = simulate(_scenario())
    (steps_here, sent), = here_before
    assert 4 * 16384 < steps_here <= 5 * 16384 and sent >= 16  # (before the fork, then in the child)
    assert _outputs(there) == _outputs(here)
    # (the gaps streamed in the child, from every step's end)
    assert there.itl() is not None and there.itl() == here.summary()["itl_s"]


def test_a_run_shorter_than_the_fork_threshold_never_forks(monkeypatch):
    monkeypatch.setattr(step_helper.ReducerHelper, "FORK_AT_STEPS", SHIPPED_FORK_AT)
    forks = []
    monkeypatch.setattr(step_helper.ReducerHelper, "_start", lambda self: forks.append(1))
    monkeypatch.setattr("servesim.simulation.helper_wanted", lambda: True)
    there = simulate(_scenario())
    steps = there.summary()["num_steps"]
    assert forks == [] and 24 * 16384 < steps <= SHIPPED_FORK_AT  # (every replica's buffers reduced here)
    monkeypatch.setattr("servesim.simulation.helper_wanted", lambda: False)
    assert _outputs(there) == _outputs(simulate(_scenario()))


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


def _logged_buffer():
    """A buffer with every kind of chunk: a single step, stretches with growth, frees,
    arrivals kept waiting and arrivals that joined with their prompts, a prompt's chunk stretch
    (a span: its prompt tokens per step, a request more running than emit) (its columns are
    what the helper is sent)."""
    from servesim.metrics.recorder import BatchRuns, BlockGrowth, Recorder

    rec = Recorder(keep_steps=False)
    rec.log_step(0.0, 0.25, 300, 2, 2, 1, 30)
    ends = np.cumsum(np.full(70, 0.0125)) + 0.25  # (>= 64 values: copied as an array)
    rec.log_decode_steps(0.25, ends, BatchRuns([3, 2], [40, 30]), 1, BlockGrowth(31, [3, 5, 9], [70, 40, 70], 16,
                                                                                      [(40, 6)]), 12, [5, 20],
                         prefill_at=[(7, 900), (33, 45)])
    rec.log_decode_steps(float(ends[-1]), [1.2, 1.3], [2, 2], 0, BlockGrowth(35, [1], [2], 16, []))
    rec.log_chunk_steps(1.3, [1.4, 1.5, 1.6, 1.7, 1.8], BatchRuns([2, 1], [3, 2]), 2, BlockGrowth(37, [2], [5], 16, []),
                        [512, 511, 511, 510, 64], [1], 1)
    return rec._buf


def test_a_buffer_sent_as_raw_columns_expands_to_the_same_steps():
    buf = _logged_buffer()
    arrays = buf.wire()
    assert [a.dtype for a in arrays] == [np.dtype(d) for d in step_helper.WIRE]
    # (the child reads the bytes into fresh arrays)
    copies = [np.frombuffer(bytes(memoryview(a).cast("B")), dtype=a.dtype) for a in arrays]
    back = step_helper.StepBuffer.from_wire(buf.num_steps, buf.block_size, copies)
    a, b = buf.log(500), back.log(500)
    assert len(b) == buf.num_steps == 78
    for c in ("start_s", "end_s", "prefill_tokens", "output_tokens", "num_running", "num_waiting", "kv_used_blocks"):
        assert getattr(a, c).dtype == getattr(b, c).dtype
        np.testing.assert_array_equal(getattr(a, c), getattr(b, c))
    assert b.kv_used_blocks[0] == 30 and b.num_waiting.tolist()[1:8] == [1, 1, 1, 1, 1, 2, 2]
    assert b.prefill_tokens[[1, 8, 34]].tolist() == [12, 900, 45]
    assert b.prefill_tokens[73:].tolist() == [512, 511, 511, 510, 64] and len(buf.span_at.array()) == 1
    assert b.num_running[73:].tolist() == [3, 3, 3, 2, 2] and b.output_tokens[73:].tolist() == [2, 2, 2, 1, 1]
    assert b.num_waiting[73:].tolist() == [2, 3, 3, 3, 3]


def test_writes_cut_short_are_continued_and_read_back_whole(monkeypatch):
    import os

    parts = [b"head", np.arange(1000, dtype=np.float64), np.arange(7, dtype=np.int32), b""]
    want = b"".join(bytes(memoryview(p).cast("B")) for p in parts)
    r, w = os.pipe()
    real = os.writev
    sizes = []

    def short(fd, views):  # a signal cutting each write after at most 333 bytes
        n = real(fd, [bytes(b"".join(bytes(v) for v in views)[:333])])
        sizes.append(n)
        return n

    monkeypatch.setattr(step_helper.os, "writev", short)
    step_helper._write_all(w, parts)
    os.close(w)
    assert len(sizes) == -(-len(want) // 333) and sum(sizes) == len(want)
    got = bytearray(len(want))
    step_helper._read_into(r, memoryview(got))
    assert bytes(got) == want
    with pytest.raises(EOFError):  # (the writer is gone: nothing more comes)
        step_helper._read_into(r, memoryview(bytearray(1)))
    os.close(r)
