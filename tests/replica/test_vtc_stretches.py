"""VTC's stretches under a queue (`vtc_stretches.py`): decode steps up to `max_wait_tokens`,
through finishes, with arrivals kept and counter lifts deferred to the stretch's end, give
exactly the run and the counters of stepping one by one, and they are really taken."""

from __future__ import annotations

import numpy as np
import pytest

from tests.factories import assert_same_run, make_engine, make_request, serve
from tests.replica.test_spec_fast_forward import assert_same_spec_run

NUM_BLOCKS = 2000


def overload(seed: int, tenants: str, n: int = 160):
    """Requests arriving faster than 16 sequences serve them (a queue from the start); with
    several tenants the last one first arrives late, so it is lifted while others wait."""
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(0.01, n))
    reqs = []
    for i in range(n):
        tenant = tenants[i % len(tenants)]
        if tenant == tenants[-1] and i < n // 2:
            tenant = tenants[0]  # (the last tenant is new in the second half)
        reqs.append(make_request(i, int(rng.integers(1, 200)), int(rng.integers(1, 120)), float(t[i]), tenant=tenant))
    return reqs


def run(reqs, fast_forward: bool, params: dict, answers: list | None = None, lifts: list | None = None,
        spec: int = 0):
    kw = {"num_speculative_tokens": spec, "spec_acceptance_rate": 0.7, "rng": np.random.default_rng(5)} if spec else {}
    engine, sched, kv, loop, _ = make_engine(num_blocks=NUM_BLOCKS, scheduler="vtc", params=params,
                                             max_num_batched_tokens=256, max_num_seqs=16,
                                             fast_forward=fast_forward, defer_finishes=fast_forward, **kw)
    if answers is not None:  # every fast-forward answer given with requests waiting
        ask = sched.fast_forward

        def fast_forward_answer(out):
            ff = ask(out)
            if sched.waiting:
                answers.append(ff)
            return ff
        sched.fast_forward = fast_forward_answer
    if lifts is not None:  # lifts deferred to a stretch's end
        lift = sched._lift_arrivals

        def lift_arrivals():
            lifts.extend(sched._lifts)
            lift()
        sched._lift_arrivals = lift_arrivals
    serve(engine, loop, reqs)
    engine.drain(loop.now_s)
    kv.check_all_free()
    return engine, sched


@pytest.mark.parametrize("params", [{}, {"variant": "lcf"}, {"variant": "fcfs"}, {"max_wait_tokens": 3},
                                    {"tenant_weights": {"b": 2.0}, "input_price": 2.0}])
@pytest.mark.parametrize("seed,tenants", [(1, "a"), (4, "abc"), (3, "ab")])
@pytest.mark.parametrize("spec", [0, 3])
def test_stretches_under_a_queue_match_stepping(params, seed, tenants, spec):
    """With speculative decoding (`spec`) the stretches are `SpecStretch`es capped the same way
    (`FastForward.max_steps`): the counters charge each request's tokens, and a lift deferred to
    a cut stretch's end reads them without the tokens of the step in flight (`_charge_tokens`)."""
    answers, lifts = [], []
    a_reqs, b_reqs = overload(seed, tenants), overload(seed, tenants)
    a, sa = run(a_reqs, True, params, answers, lifts, spec)
    b, sb = run(b_reqs, False, params, spec=spec)
    (assert_same_spec_run if spec else assert_same_run)(a, b, a_reqs, b_reqs, NUM_BLOCKS)
    assert sa.counters == sb.counters  # float for float
    capped = [ff.max_steps for ff in answers if ff.repeat]
    assert capped and max(capped) <= params.get("max_wait_tokens", 10) + 1  # stretches with a queue, capped
    assert a.num_fast_forwarded_steps > a.num_steps / 3
    if tenants == "abc" and params.get("variant", "vtc") == "vtc":
        assert lifts  # a tenant with nothing queued arrived while a stretch ran


def test_fractional_charges_keep_the_earlier_answers():
    # 1.5 per token: a stretch's `price * steps` per request is not stepping's float sum, so
    # nothing is fast-forwarded while requests wait, and stretches stop at finishes.
    answers = []
    a_reqs, b_reqs = overload(1, "a"), overload(1, "a")
    a, sa = run(a_reqs, True, {"output_price": 1.5}, answers)
    b, sb = run(b_reqs, False, {"output_price": 1.5})
    assert_same_run(a, b, a_reqs, b_reqs, NUM_BLOCKS)
    assert answers and not any(ff.repeat for ff in answers)
    assert sa.counters == sb.counters


def test_cap_counts_the_decode_steps_since_the_mini_batch():
    engine, sched, kv, loop, _ = make_engine(num_blocks=400, scheduler="vtc", max_num_seqs=2,
                                             params={"max_wait_tokens": 4})
    for i in range(3):
        sched.add_request(make_request(i, 10, 50), 0.0)
    out = sched.schedule(0.0)  # a mini-batch of two; the third waits
    assert [r.id for r, _ in out.scheduled] == [0, 1]
    ff = sched.fast_forward(out)  # the mini-batch and its 4 decode steps
    assert ff.repeat and ff.through_finishes and ff.max_steps == 5
    for r in sched.running:
        r.num_computed_tokens, r.num_output_tokens = 10, 1
    sched.end_step(out, 0.1, 1)
    out = sched.schedule(0.1)
    assert sched.fast_forward(out).max_steps == 4
    sched.end_step(out, 0.2, 2)
    sched._decode_steps = 3  # (as after three decode steps)
    out = sched.schedule(0.2)
    assert not sched.fast_forward(out).repeat  # the next step looks at admission again


def test_a_lift_in_a_speculative_stretchs_only_step_reads_the_counters_before_it(monkeypatch):
    """At 4 replicas a speculative stretch priced past the next arrival anywhere may be cut in
    its step 0 by a tenant's first request, whose lift stepping reads before that step's tokens
    are charged. Until the forty-second round the stretch's end charged them first: that run
    differed from stepping (its TTFT, TPOT and end time)."""
    from servesim.replica.schedulers.vtc_stretches import VTCStretches
    from tests.factories import simulate_example

    lone = []
    charge = VTCStretches._charge_tokens
    monkeypatch.setattr(VTCStretches, "_charge_tokens",
                        lambda self, out, steps: (lone.append(steps == 1 and bool(self._lifts)), charge(self, out, steps)))

    sets = ["scheduler.name=vtc", "engine.num_speculative_tokens=3", "workload.trace.end_s=600",
            "workload.trace.speedup=4", 'workload.attributes.tenants={"a": 1, "b": 1, "c": 1}',
            "engine.gpu_memory_utilization=0.3", "replicas=4", "router.name=least-requests"]
    assert simulate_example("azure-code.yaml", sets)[1] == simulate_example("azure-code.yaml", sets, False)[1]
    assert any(lone)  # (a stretch cut in its step 0 ended with a lift deferred)
