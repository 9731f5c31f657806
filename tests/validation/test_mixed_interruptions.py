"""Where the simulation puts the other users' prompts (validation/mixed.py): the share of them that
land inside a request's decode, and the request cycle split into its TTFT and decode parts."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from servesim.simulation import simulate
from servesim.validation import mixed
from servesim.validation.silicon import ClientOptions, row_request_counts, row_scenario

from tests.validation.silicon_rows import silicon_row


def req(i, first, finish, outputs=8, warmup=False):
    return SimpleNamespace(id=i, first_token_s=first, finish_s=finish, num_output_tokens=outputs,
                           extra={"warmup": True} if warmup else {})


def test_a_lock_step_wave_interrupts_each_decode_with_the_prompts_after_it_only():
    # eight prompts prefilled one after another, every request finishing in the same step:
    # the j-th sees the 7 - j prompts after it, (0 + 1 + ... + 7) / 8 / 7 = 0.5
    wave = [req(j, 1.0 + j, 100.0) for j in range(8)]
    assert mixed.interrupting_share(wave, users=8) == pytest.approx(0.5)


def test_users_spread_out_see_every_other_users_next_prompt():
    # user u: a measured request decoding over (u, u + 50], then its next request, prefilled just
    # after; each decode sees the later users' measured prompts and the earlier users' next ones
    users = 10
    measured = [req(u, float(u), u + 50.0) for u in range(users)]
    trailing = [req(users + u, u + 50.5, u + 100.0) for u in range(users)]
    assert mixed.interrupting_share(measured + trailing, users, measured_end=users) == pytest.approx(1.0)
    # the trailing requests interrupt but are not averaged: counting them too lowers the share
    assert mixed.interrupting_share(measured + trailing, users) < 1.0


def test_warmup_unfinished_and_single_token_requests_are_not_averaged():
    base = [req(0, 1.0, 10.0), req(1, 2.0, 10.0)]  # request 0 sees request 1's prompt, 1 sees none
    assert mixed.interrupting_share(base, users=2) == pytest.approx(0.5)
    extra = [req(2, 3.0, 10.0, warmup=True), req(3, 4.0, None), req(4, 5.0, 10.0, outputs=1)]
    # three more prompts inside request 0's decode and two inside request 1's, still averaged over 0 and 1
    assert mixed.interrupting_share(base + extra, users=2) == pytest.approx((4 + 3) / 2)
    assert math.isnan(mixed.interrupting_share([req(0, 1.0, None)], users=2))  # nothing to average


def test_cycle_parts_split_the_closed_loop_cycle_into_ttft_and_decode():
    r = silicon_row(0, isl="8192", osl="101", silicon_ttft_ms="1000", silicon_tpot_ms="20")  # cycle 1 + 100 x 0.02 = 3 s
    cycle, ttft, decode = mixed.cycle_parts(r, ttft_s=1.3, tpot_s=0.017)
    assert ttft == pytest.approx(0.3 / 3.0)
    assert decode == pytest.approx(-0.3 / 3.0)
    assert cycle == pytest.approx(0.0, abs=1e-12)


def test_sglang_users_stay_in_a_lock_step_wave_unless_started_out_of_step():
    # SGLang's prefill batches go first and the fixed output lengths end every request of a wave in
    # the same steps: the simulated decodes see half the other prompts (docs/fidelity-history.md)
    r = silicon_row(0, backend="sglang", backend_version="", isl="4096", osl="256", concurrency="32", batch_size="32")
    shares = {}
    for ramp in (None, 1.0):
        options = ClientOptions(ramp_cycles=ramp)
        result = simulate(row_scenario(r, options))
        shares[ramp] = mixed.interrupting_share(result.requests, 32, row_request_counts(r, options).measured_end)
    assert 0.4 < shares[None] < 0.6
    assert shares[1.0] > 0.9
