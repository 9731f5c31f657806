"""The real-time driver on a fake clock: tokens at step ends, aborts between steps."""

from __future__ import annotations

from servesim.scenario import load_scenario
from servesim.serve.driver import Driver
from servesim.simulation import simulate
from servesim.workload.request import RequestState


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def make_driver(scale: float = 1.0):
    clock = FakeClock()
    return Driver(load_scenario(None, []), time_scale=scale, clock=clock), clock


def test_tokens_appear_when_the_clock_reaches_their_step_end():
    d, clock = make_driver(scale=2.0)
    s = d.submit(prompt_len=100, output_len=3)
    assert s.num_ready == 0 and d.engine.busy
    first_end_s = d.loop.next_time_s()
    clock.t += (first_end_s - 1e-9) * 2.0  # just before the prefill step ends (wall = 2 x simulated)
    d.advance()
    assert s.num_ready == 0
    clock.t += 1e-6
    d.advance()
    assert s.num_ready == 1 and s.event.is_set() and s.last_token_s == first_end_s
    clock.t += 10.0
    d.advance()
    assert s.done and s.num_ready == 3 and s.req.state == RequestState.FINISHED


def test_driver_timing_equals_simulate_on_the_same_arrivals(tmp_path):
    d, clock = make_driver()
    streams = []
    for prompt, out, at in ((500, 20, 0.0), (1500, 10, 0.01), (300, 30, 0.05)):
        clock.t = 100.0 + at
        streams.append(d.submit(prompt, out))
    clock.t += 60
    d.advance()
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,prompt_len,output_len\n0.0,500,20\n0.01,1500,10\n0.05,300,30\n")
    sim = simulate(load_scenario(None, [f"workload.trace.name={trace}"]))
    for s, r in zip(streams, sim.requests):
        assert abs(s.req.first_token_s - r.first_token_s) < 1e-9 and abs(s.req.finish_s - r.finish_s) < 1e-9


def test_abort_mid_step_is_applied_before_the_next_step():
    d, clock = make_driver()
    s = d.submit(prompt_len=2000, output_len=500)
    assert d.kv.num_blocks_of(s.req.id) > 0  # admitted, its prefill step is running
    d.abort(s)
    assert s.done and s.aborted and s.req.state == RequestState.RUNNING  # still in the running step
    clock.t += 1.0
    d.advance()
    assert s.req.state == RequestState.ABORTED and d.num_aborted == 1
    assert d.kv.num_blocks_of(s.req.id) == 0 and d.scheduler.num_running == 0 and not d.engine.busy


def test_a_simulation_failure_ends_open_streams_and_refuses_new_requests():
    import pytest

    d, clock = make_driver()
    s = d.submit(prompt_len=100, output_len=50)

    def broken(now_s, _):
        raise ZeroDivisionError("boom")

    d.loop.schedule(d.loop.now_s, broken)
    with pytest.raises(ZeroDivisionError):
        d.advance()
    assert s.done and s.event.is_set() and isinstance(d.error, ZeroDivisionError)
    with pytest.raises(RuntimeError, match="the simulated engine stopped: boom"):
        d.submit(prompt_len=10, output_len=5)
