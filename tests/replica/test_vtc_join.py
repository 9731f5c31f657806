"""Arrivals joining vtc's stretches as prompt-only steps (`VTCStretches.arrivals_join`,
`stall_admits`, `stretch_join._stall_join`): where stepping runs the newcomers' mini-batch at the
boundary they cut (`max_wait_tokens` decode steps since the last one, one tenant waiting, the
future peak fits), the fast-forwarded run is stepping's (every request's tokens, token steps,
times and computed tokens, the step log) and so are the tenants' counters, float for float."""

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
    else:
        assert a.num_joined_arrivals < 10
