"""Every policy's speculative decode stretches (`replica/spec_stretch.py`): where the policy
knows the order of its repeated steps (`Scheduler.repeat_order`) they give exactly the results
of stepping one by one and cover most steps; where it does not, nothing is fast-forwarded."""

from __future__ import annotations

import numpy as np
import pytest

from tests.factories import make_engine, make_request, serve
from tests.replica.test_policy_stretches import POLICIES, mixed_requests
from tests.replica.test_spec_fast_forward import assert_same_spec_run

SPEC_POLICIES = POLICIES + [("trtllm", {}), ("trtllm", {"capacity_scheduler_policy": "MAX_UTILIZATION",
                                                        "enable_chunked_context": True})]


def spec_run(reqs, fast_forward: bool, scheduler: str, params: dict, num_blocks: int):
    engine, _, kv, loop, _ = make_engine(num_blocks=num_blocks, scheduler=scheduler, params=params,
                                         max_num_batched_tokens=256, max_num_seqs=16, num_speculative_tokens=3,
                                         spec_acceptance_rate=0.7, rng=np.random.default_rng(7),
                                         fast_forward=fast_forward, defer_finishes=fast_forward)
    serve(engine, loop, reqs)
    engine.drain(loop.now_s)
    kv.check_all_free()
    return engine


def spread_requests(seed: int, keys: bool, spread: float = 10.0):
    """`mixed_requests` (two tenants, three programs, two priorities) arriving `spread` times
    further apart: a loaded replica whose queue empties now and then, so steps repeat."""
    reqs = mixed_requests(seed, keys)
    for r in reqs:
        r.arrival_s *= spread
    return reqs


@pytest.mark.parametrize("scheduler,params", SPEC_POLICIES)
@pytest.mark.parametrize("seed,num_blocks,keys,share", [(2, 120, True, 0.0), (4, 2000, False, 0.9)])
def test_spec_stretches_match_stepping_for_every_policy(scheduler, params, seed, num_blocks, keys, share):
    a_reqs, b_reqs = spread_requests(seed, keys), spread_requests(seed, keys)
    a = spec_run(a_reqs, True, scheduler, params, num_blocks)
    b = spec_run(b_reqs, False, scheduler, params, num_blocks)
    assert_same_spec_run(a, b, a_reqs, b_reqs, num_blocks)
    ran = a.num_fast_forwarded_steps / a.num_steps
    assert ran > share and a.num_fast_forwarded_steps > 0  # (with prefix keys and 120 blocks: only that it ran)


def test_priority_repeats_a_step_in_key_order_not_in_its_scheduled_order():
    """A prompt admitted behind a running request but with a smaller key (a higher
    priority) decodes ahead of it from the next step on."""
    engine, sched, _, _, _ = make_engine(scheduler="priority")
    low, high = make_request(0, 16, 50, 0.0, priority=1), make_request(1, 16, 50, 0.1, priority=0)
    sched.add_request(low, 0.0)
    assert sched.schedule(0.0).scheduled == [(low, 16)]
    engine.emit(low, 0, 0.05)
    low.num_computed_tokens = 16
    sched.add_request(high, 0.1)
    out = sched.schedule(0.1)
    assert out.scheduled == [(low, 1), (high, 16)]
    assert sched.repeat_order(out) == [high, low]


def test_edf_repeats_in_arrival_order_only_with_one_per_token_target():
    engine, sched, _, _, _ = make_engine(scheduler="edf", params={"default_tpot_s": 0.05})
    a, b = make_request(0, 16, 50, 0.0), make_request(1, 16, 50, 0.0)
    for r in (a, b):
        sched.add_request(r, 0.0)
    out = sched.schedule(0.0)
    assert sched.repeat_order(out) == [a, b]
    b.tpot_slo_s = 0.01  # its deadline then comes first or not depending on the token times
    assert sched.repeat_order(out) is None


def test_autellix_order_holds_until_a_level_may_change():
    """Repeated steps keep (level, arrival) order until a call's service may reach its next
    threshold (0.5 s): a lone call from the step's start; two calls of one program (PLAS:
    both credit the program) in half that time; nothing is repeated on a stale key."""
    engine, sched, _, _, _ = make_engine(scheduler="autellix")
    lone, a, b = make_request(0, 16, 50, 0.0), make_request(1, 16, 50, 0.0, program_id=7), \
        make_request(2, 16, 50, 0.0, program_id=7)
    for r in (lone, a, b):
        sched.add_request(r, 0.0)
    out = sched.schedule(1.0)
    assert [r for r, _ in out.scheduled] == [lone, a, b] == sched.repeat_order(out)
    until_s, steps = sched.repeat_order_limit(out)
    assert until_s == 1.0 + 0.25 * (1 - 1e-9) - 1e-6 and steps > 1 << 40
    sched.service_s[7] = 0.6  # (level 1 now, its key still says 0)
    assert sched.repeat_order_limit(out)[1] == 0


def test_fastswitch_order_holds_until_the_next_priority_refresh():
    engine, sched, _, _, _ = make_engine(scheduler="fastswitch", params={"priority_update_interval": 7})
    a, b = make_request(0, 16, 50, 0.0, tenant="x"), make_request(1, 16, 50, 0.1, tenant="y")
    sched.num_engine_steps = 12
    for r in (a, b):
        sched.add_request(r, 0.0)
    out = sched.schedule(1.0)
    assert sched.repeat_order_limit(out) == (float("inf"), 2)  # steps 12 and 13; 14 refreshes
    assert sched.repeat_order(out) is None  # tenants absent from the snapshot (none taken yet): live counters
    sched._snapshot = {"x": 5.0, "y": 1.0}
    assert sched.repeat_order(out) == [b, a]  # y's smaller counter first
