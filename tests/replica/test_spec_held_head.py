"""Arrivals behind orca's blocked head inside a speculative stretch (`SpecStretch.hold_waiting`):
where the newcomers' reservations do not fit the blocks stepping has free at the boundary, the
stretch goes on with them waiting up to the next finish, exactly as stepping runs (every
request's tokens, times, the step log, the acceptance rows left over), and that path ran."""

from __future__ import annotations

import pytest

from tests.factories import REQUEST_OUTCOME
from tests.replica.test_spec_join import assert_same_spec_run, llama, spec_run  # noqa: F401
from tests.replica.test_stretch_join import light_load


@pytest.mark.parametrize("reservation,seed,num_blocks", [("max", 2, 160), ("max", 3, 220), ("max", 4, 300),
                                                         ("pow2", 1, 120), ("pow2", 2, 160)])
def test_orca_head_held_in_spec_stretches_matches_stepping(reservation, seed, num_blocks, llama):
    params = {"reservation": reservation}
    a_reqs, b_reqs = light_load(seed, gap_s=0.1), light_load(seed, gap_s=0.1)
    for rs in (a_reqs, b_reqs):  # (a `max` reservation of 400 tokens: a few fill the cache)
        for r in rs:
            r.max_tokens = 400
    a = spec_run(a_reqs, True, num_blocks, llama, "orca", params)
    b = spec_run(b_reqs, False, num_blocks, llama, "orca", params)
    assert_same_spec_run(a, b, a_reqs, b_reqs, num_blocks, REQUEST_OUTCOME + ("num_computed_tokens",
                                                                              "first_scheduled_s"))
    assert b.num_held_arrivals == 0
    assert a.num_held_arrivals >= 5  # (the path ran: stretches went on behind a blocked head)
