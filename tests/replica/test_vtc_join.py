"""Arrivals joining vtc's stretches as prompt-only steps (`VTCStretches.arrivals_join`,
`stall_wait`, `stall_admits`, `stretch_join._stall_join`): where stepping runs the newcomers'
mini-batch at the boundary they cut (`max_wait_tokens` decode steps since the last one, one
tenant waiting, the future peak fits), or holds them waiting to the step where the count is
reached (`stretch_join._hold`), the fast-forwarded run is stepping's (every request's tokens,
token steps, times and computed tokens, the step log with its waiting counts) and so are the
tenants' counters, float for float."""

from __future__ import annotations

import pytest

from tests.factories import ToyPerf, assert_same_run, make_request
from tests.replica.test_stall_join import FIELDS, llama, stalls  # noqa: F401 (fixtures)
from tests.replica.test_stretch_join import light_load, run


def tenants_in_phases(seed: int, **kw):
    """`light_load` from tenant a alone, then a and b (weight 2 in some runs) alternating."""
    reqs = light_load(seed, **kw)
    for r in reqs[len(reqs) // 2::2]:
        r.tenant = "b"
    return reqs


VARIANTS = [{}, {"max_wait_tokens": 3}, {"variant": "fcfs"},
            {"tenant_weights": {"b": 2.0}, "input_price": 2.0}]


@pytest.mark.parametrize("params", VARIANTS)
@pytest.mark.parametrize("seed,num_blocks", [(1, 2000), (2, 300), (3, 120)])
@pytest.mark.parametrize("perf_name", ["toy", "llama"])
def test_vtc_arrivals_join_as_mini_batches(params, seed, num_blocks, perf_name, llama, stalls):  # noqa: F811
    perf = ToyPerf() if perf_name == "toy" else llama
    a_reqs, b_reqs = tenants_in_phases(seed), tenants_in_phases(seed)
    a = run(a_reqs, True, num_blocks, perf, scheduler="vtc", params=params)
    b = run(b_reqs, False, num_blocks, perf, scheduler="vtc", params=params)
    assert_same_run(a, b, a_reqs, b_reqs, num_blocks, FIELDS)
    assert a.scheduler.counters == b.scheduler.counters  # float for float
    # arrivals joined where stepping ran their mini-batch at once (fewer with 120 blocks, where
    # the future peak holds newcomers back); those within `max_wait_tokens` of the last did not
    share = 0.05 if num_blocks == 120 else 0.3
    assert a.num_joined_arrivals > share * len(a_reqs) and len(stalls) > 0
    assert a.num_joined_arrivals < len(a_reqs)
    assert b.num_joined_arrivals == 0
    # arrivals within `max_wait_tokens` of the last mini-batch were held to the count
    assert a.num_held_arrivals > (0.05 * len(a_reqs) if num_blocks == 2000 else 0)


@pytest.mark.parametrize("cap", [170, 150])
def test_bursts_of_one_tenant_join_within_the_batch_cap(cap, llama, stalls):  # noqa: F811
    # four arrivals of one tenant in one step (162 prompt tokens) join as one mini-batch when
    # their prompts fit `batch_max_tokens`; past it the burst is left to stepping (the last
    # waits for the next mini-batch)
    bursts = [[make_request(4 * i + j, 30 + 7 * j, 40 + 13 * i % 50, 0.3 * i + 1e-4 * j, tenant="a")
               for i in range(40) for j in range(4)] for _ in range(2)]
    params = {"batch_max_tokens": cap}
    a = run(bursts[0], True, 2000, llama, scheduler="vtc", params=params)
    b = run(bursts[1], False, 2000, llama, scheduler="vtc", params=params)
    assert_same_run(a, b, bursts[0], bursts[1], 2000, FIELDS)
    assert a.scheduler.counters == b.scheduler.counters
    if cap == 170:
        assert a.num_joined_arrivals >= 100 and a.num_joined_arrivals >= 3 * len(stalls)
    else:  # (a burst over the cap is refused whole: the few that join come alone after a split)
        assert a.num_joined_arrivals < 20


def pairs(gap_s: float, n: int = 60):
    """Requests of one tenant in pairs: the second `gap_s` after the first, a pair every 0.6 s."""
    return [make_request(2 * i + j, 40 + 11 * (i % 7), 150 + 17 * (i % 5), 0.6 * i + j * gap_s, tenant="a")
            for i in range(n) for j in range(2)]


@pytest.mark.parametrize("gap_s", [0.02, 0.05])
@pytest.mark.parametrize("params", [{}, {"max_wait_tokens": 20}])
def test_arrivals_within_the_count_are_held_to_the_mini_batch(gap_s, params, llama, stalls):  # noqa: F811
    # The second of each pair arrives a few decode steps after the first one's mini-batch, so
    # stepping runs decode steps (it waiting) until `max_wait_tokens` of them ran, then its
    # mini-batch. Fast-forwarded, it is held in the stretch to that step and joins there as a
    # prompt-only step: the same run, step log (its waiting count) and counters as stepping's
    a_reqs, b_reqs = pairs(gap_s), pairs(gap_s)
    a = run(a_reqs, True, 2000, llama, scheduler="vtc", params=params)
    b = run(b_reqs, False, 2000, llama, scheduler="vtc", params=params)
    assert_same_run(a, b, a_reqs, b_reqs, 2000, FIELDS)
    assert a.scheduler.counters == b.scheduler.counters
    assert a.num_held_arrivals >= 40 and a.num_joined_arrivals >= 100
    # the held ones waited: their first token came `max_wait_tokens` decode steps after the
    # first one's (its prompt-only step, then the count, then their own)
    wait = params.get("max_wait_tokens", 10)
    waited = [y for x, y in zip(a_reqs[::2], a_reqs[1::2]) if y.token_steps[0] == x.token_steps[0] + wait + 1]
    assert len(waited) >= 40
