"""TensorRT-LLM's overlap scheduler fetches new requests a step ahead (`overlap_fetch_lag`,
replica/schedulers/trtllm_fetch.py): an arrival during a step first runs two steps later, an idle
engine takes it at once, and such an engine steps one by one (exact step lists)."""

from __future__ import annotations

from servesim import simulate
from servesim.scenario import validate_scenario
from servesim.workload.request import RequestState
from tests.factories import make_engine, make_request
from tests.replica.test_vllm_scheduler import run_logged

LAG = {"overlap_fetch_lag": True}


def steps_of(params: dict, requests):
    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="trtllm", max_num_batched_tokens=64,
                                                fast_forward=False, params=params)
    steps = run_logged(engine, loop, requests)
    assert all(r.state == RequestState.FINISHED for r in requests)
    kv.check_all_free()
    return steps


def test_an_arrival_during_a_step_waits_for_the_next_one_too():
    # Steps take 10-12 ms (ToyPerf): B comes at 5 ms, in A's context step (0-11 ms); C at 15 ms, in step 1.
    reqs = lambda: [make_request(0, 10, 8), make_request(1, 8, 2, arrival=0.005),  # noqa: E731
                    make_request(2, 8, 2, arrival=0.015)]
    off = steps_of({}, reqs())
    assert off[1] == [(0, 1), (1, 8)]  # the synchronous loop: B runs in the step after its arrival
    assert off[2] == [(0, 1), (1, 1), (2, 8)]
    lag = steps_of(LAG, reqs())
    assert lag[1] == [(0, 1)]  # step 1 was scheduled before B was fetched (as step 0 started it was not there)
    assert lag[2] == [(0, 1), (1, 8)]  # fetched as step 1 started: it runs in step 2
    assert lag[3] == [(0, 1), (1, 1), (2, 8)]  # C, fetched as step 2 started


def test_an_idle_engine_fetches_at_once():
    # A's only token ends it in step 0: with nothing else to run, B (arrived during step 0) runs in step 1.
    lag = steps_of(LAG, [make_request(0, 10, 1), make_request(1, 8, 2, arrival=0.005)])
    assert lag == [[(0, 10)], [(1, 8)], [(1, 1)]]
    # a request reaching an engine with no step in flight runs at its arrival
    reqs = [make_request(0, 10, 1), make_request(1, 8, 2, arrival=0.5)]
    steps_of(LAG, reqs)
    assert reqs[1].first_scheduled_s == 0.5


def test_the_lag_steps_the_engine_one_by_one_and_delays_first_tokens():
    def run(lag: bool):
        return simulate(validate_scenario({
            "model": "llama-3.1-8b", "gpu": "h100-sxm", "scheduler": {"name": "trtllm", "overlap_fetch_lag": lag},
            "workload": {"arrival": {"process": "poisson", "rate_per_s": 20},
                         "lengths": {"prompt_tokens": 512, "output_tokens": 32}, "num_requests": 64}}))

    off, lag = run(False), run(True)
    assert off.num_fast_forwarded_steps > 0 and lag.num_fast_forwarded_steps == 0
    ttfts = lambda res: [r.first_token_s - r.arrival_s for r in res.requests]  # noqa: E731
    # an arrival during a step waits for one more (here about 10-20 ms)
    assert sum(ttfts(off)) / 64 + 0.005 < sum(ttfts(lag)) / 64 < sum(ttfts(off)) / 64 + 0.03
    assert all(r.state == RequestState.FINISHED for r in lag.requests) and len(lag.requests) == 64
