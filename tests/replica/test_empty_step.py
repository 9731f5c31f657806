"""A step whose running pass preempts the very request it makes room for, before any other got a
token, schedules nothing (vLLM stops its running loop there and admits nothing in a step that
preempted). vLLM's engine loop schedules again at once; the replica used to go idle instead, with
requests still running, until an arrival woke it, or for ever after the last one."""

from __future__ import annotations

from pathlib import Path

import pytest

from servesim import load_scenario, simulate
from servesim.replica.schedulers.continuum import ContinuumScheduler

# Continuum's victim is the call of the latest job, not the last running one: here a Mooncake
# prompt of 87k tokens, chunked 256 tokens a step (`long_prefill_token_threshold`) at the head of
# the running list, runs out of blocks (a small KV cache) and is its own victim.
MOONCAKE = Path(__file__).resolve().parents[2] / "examples" / "mooncake.yaml"
SETS = ["workload.num_requests=24", "workload.trace.speedup=1", "scheduler.name=continuum",
        "engine.gpu_memory_utilization=0.3", "engine.long_prefill_token_threshold=256", "max_sim_time_s=2000"]


def _run(fast_forward: bool, monkeypatch) -> tuple[dict, list, int]:
    empty = []
    schedule = ContinuumScheduler.schedule

    def counted(self, now_s):
        out = schedule(self, now_s)
        if not out.scheduled and out.preempted:
            empty.append(now_s)
        return out

    monkeypatch.setattr(ContinuumScheduler, "schedule", counted)
    result = simulate(load_scenario(MOONCAKE, [*SETS, f"engine.fast_forward={fast_forward}"]))
    rows = [(r.id, r.state, r.finish_s, r.num_output_tokens) for r in sorted(result.requests, key=lambda r: r.id)]
    return result.summary(), rows, len(empty)


@pytest.mark.parametrize("fast_forward", [False, True])
def test_an_empty_step_that_preempted_is_scheduled_again_at_once(fast_forward, monkeypatch):
    summary, rows, empty_steps = _run(fast_forward, monkeypatch)
    assert empty_steps >= 1  # (the case arose)
    assert summary["num_finished"] == summary["num_requests"] == 24  # (was 17: 7 left running at 2,000 s)
    assert summary["simulated_time_s"] < 300  # (not held up to the next arrival or the run's end)


def test_the_same_run_fast_forwarded_and_stepped(monkeypatch):
    assert _run(True, monkeypatch)[1] == _run(False, monkeypatch)[1]
