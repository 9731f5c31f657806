"""The unmeasured trailing round after the measured requests (validation/client.py): counts, the
means that leave it out, and its effect on a played row (exact where the mechanism is exact)."""

from __future__ import annotations

import pytest

from servesim.simulation import simulate
from servesim.validation.client import ClientOptions, RequestCounts, request_counts
from servesim.validation.run import client_metrics, simulate_row
from servesim.validation.silicon import row_request_counts, row_scenario
from servesim.workload.request import Request, RequestState
from tests.validation.silicon_rows import silicon_row


def test_counts_add_one_unmeasured_round_per_user():
    c = request_counts(16, ClientOptions(), warmup_in_loop=False, script_rounds=None)
    assert c == RequestCounts(warmup=0, measured=64, trailing=16) and (c.total, c.measured_end) == (80, 64)
    # warm-up in the loop comes first; measured ids follow it
    c = request_counts(16, ClientOptions(), warmup_in_loop=True, script_rounds=None)
    assert (c.warmup, c.measured_end, c.total) == (16, 80, 96)
    # at least min_requests measured; 0 trailing rounds: the run stops with the measured requests
    assert request_counts(2, ClientOptions(trailing_rounds=0), False, None) == RequestCounts(0, 32, 0)
    # a known script sends exactly its rounds, all measured
    assert request_counts(16, ClientOptions(), False, script_rounds=10) == RequestCounts(0, 160, 0)
    with pytest.raises(ValueError, match="users must be >= 1"):
        request_counts(0, ClientOptions(), False, None)


def test_scenario_sends_the_trailing_round():
    row = silicon_row(0, concurrency="8", batch_size="8")
    s = row_scenario(row, ClientOptions(), calibration=None)
    assert s.workload.num_requests == 32 + 8 and s.workload.arrival.warmup_requests == 0
    assert row_request_counts(row, ClientOptions()).measured_end == 32
    off = row_scenario(row, ClientOptions(trailing_rounds=0), calibration=None)
    assert off.workload.num_requests == 32


def _done(rid: int, ttft: float, e2e: float) -> Request:
    r = Request(rid, 1.0, 10, 11)
    r.state, r.first_token_s, r.finish_s, r.num_output_tokens = RequestState.FINISHED, 1.0 + ttft, 1.0 + e2e, 11
    return r


def test_means_leave_out_the_trailing_ids():
    reqs = [_done(0, 0.2, 1.2), _done(1, 0.4, 2.4), _done(2, 9.0, 99.0)]
    assert client_metrics(reqs, measured_end=2) == (pytest.approx(0.3), pytest.approx(0.15), 2)
    assert client_metrics(reqs)[2] == 3


def test_trailing_round_loads_the_last_measured_decodes():
    # 2,048-token prompts, 64-token outputs, 8 users: the token budget prefills one prompt a step,
    # so every re-arriving prompt stalls the others' decodes for a step. Without the trailing round
    # the last measured round decodes with no prompt arriving; with it, like the rounds before.
    # The front end pinned to no fixed latency (the row's release, vLLM H100 0.18.0, now has 20 ms, fitted under
    # InferenceMAX's client): the mechanism, not a fitted constant, is under test.
    row = silicon_row(0, isl="2048", osl="64", concurrency="8", batch_size="8")
    frontend = {"request_s": 0.002, "prompt_token_s": 0.0, "latency_s": 0.0}
    off = simulate_row(row, ClientOptions(trailing_rounds=0), frontend=frontend)
    on = simulate_row(row, ClientOptions(), frontend=frontend)
    assert on.num_requests == off.num_requests == 32
    assert on.ttft_s == off.ttft_s  # a trailing prompt is sent after its user's measured ones
    assert on.tpot_s > off.tpot_s * 1.02
    # per round (8 requests each): the last measured round decodes like the rounds before it,
    # not 13 % faster; the fast tail moves to the unmeasured round
    def round_tpots(options: ClientOptions) -> list[float]:
        done = simulate(row_scenario(row, options, frontend=frontend)).requests
        tpot = {r.id: (r.finish_s - r.first_token_s) / (r.num_output_tokens - 1) for r in done}
        return [sum(tpot[i] for i in range(k * 8, k * 8 + 8)) / 8 for k in range(len(done) // 8)]
    before, after = round_tpots(ClientOptions(trailing_rounds=0)), round_tpots(ClientOptions())
    assert len(before) == 4 and len(after) == 5 and after[:3] == before[:3]
    assert before[3] < 0.9 * before[2] and after[3] == pytest.approx(before[2], rel=0.05)
    assert after[4] < 0.9 * after[3]
