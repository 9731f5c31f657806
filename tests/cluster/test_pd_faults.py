"""Crashes with prefill/decode pools and with live migration: transfers and migrations a crash
cuts are settled, every request ends, every block comes back (the run's invariant check), and
results stay exact under fast-forward."""

from __future__ import annotations

import pytest

from servesim import load_scenario, simulate
from servesim.workload.request import RequestState
from tests.cluster.helpers import assert_same_steps, outcome

BUSY = ["workload.trace=null", "workload.arrival.process=poisson", "workload.arrival.rate_per_s=30",
        "workload.num_requests=300", "workload.lengths.dataset=sharegpt"]
PD = ("pools=[{name: p, role: prefill, replicas: 2}, "
      "{name: d, role: decode, replicas: 2, engine: {gpu_memory_utilization: 0.3}}]")


def _crashes(*spec: tuple[int, float, float | None]) -> str:
    return "faults.crashes=[" + ", ".join(
        f"{{replica: {i}, at_s: {t}, recovery_s: {'null' if r is None else r}}}" for i, t, r in spec) + "]"


@pytest.mark.parametrize("first_token", ["prefill", "decode"])
def test_prefill_and_decode_crashes_lose_no_request(first_token):
    sets = BUSY + [PD, f"disaggregation.first_token={first_token}", _crashes((0, 3.0, 2.0), (2, 5.0, 2.0))]
    res = simulate(load_scenario(None, sets))
    s = res.summary()
    assert s["num_finished"] == 300  # (and the invariant check: every block back, one terminal state each)
    assert all(r.num_output_tokens == r.output_len for r in res.requests)
    assert s["cluster"]["num_rerouted"] > 0
    moved = [r for r in res.requests if r.extra.get("num_reroutes")]
    assert moved and all(r.state == RequestState.FINISHED for r in moved)
    dis = s["disaggregation"]
    assert dis["num_transfers"] >= 300  # re-sent transfers count again; void ones do not


def test_crashes_with_disaggregation_are_exact_under_fast_forward():
    sets = BUSY + [PD, _crashes((0, 3.0, 2.0), (3, 4.0, 1.0))]
    fast, slow = (simulate(load_scenario(None, sets + [f"engine.fast_forward={ff}"]), keep_steps=True)
                  for ff in ("true", "false"))
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)


def test_a_mixed_replica_crashes_beside_disaggregated_pools():
    # Splitwise's mixed pool serves whole requests, without KV ports: its crash reset ports it
    # does not have (an AttributeError)
    pools = ("pools=[{name: p, role: prefill, replicas: 2}, {name: d, role: decode, replicas: 1}, "
             "{name: m, replicas: 1}]")
    sets = BUSY + [pools, "disaggregation.overflow=splitwise", _crashes((3, 3.0, 2.0))]
    fast, slow = (simulate(load_scenario(None, sets + [f"engine.fast_forward={ff}"])) for ff in ("true", "false"))
    assert outcome(fast) == outcome(slow)
    s = fast.summary()
    assert s["num_finished"] == 300 and s["cluster"]["per_replica"][3]["num_crashes"] == 1


def test_a_decode_pool_that_dies_for_good_fails_what_it_cannot_serve():
    pd = "pools=[{name: p, role: prefill}, {name: d, role: decode}]"
    res = simulate(load_scenario(None, BUSY + [pd, _crashes((1, 2.0, None))]))
    s = res.summary()
    assert s["num_finished"] + s["num_failed"] == 300 and s["num_failed"] > 0


MIG = ["workload.trace=null", "workload.arrival.process=poisson", "workload.arrival.rate_per_s=30",
       "workload.num_requests=400", "workload.lengths.dataset=sharegpt", "engine.gpu_memory_utilization=0.3",
       "replicas=4", "router=llumnix", "migration.enabled=true"]


def test_crashes_abort_the_migrations_they_cut_and_lose_no_request():
    crashes = _crashes(*[(i % 4, 2.0 + 0.37 * i, 0.5) for i in range(12)])
    res = simulate(load_scenario(None, MIG + [crashes]))
    s = res.summary()
    assert s["num_finished"] == 400
    mig = s["migration"]
    assert mig["num_migrations"] > 0 and mig["abort_reasons"].get("replica crashed", 0) > 0
    fast_slow = [simulate(load_scenario(None, MIG + [crashes, f"engine.fast_forward={ff}"])) for ff in ("false",)]
    assert outcome(fast_slow[0]) == outcome(res)


def test_a_warned_replica_drains_by_migration_before_it_crashes():
    crash = "faults.crashes=[{replica: 0, at_s: 8.0, recovery_s: 5.0, warning_s: %s}]"
    warned = simulate(load_scenario(None, MIG + [crash % 4.0]))
    cold = simulate(load_scenario(None, MIG + [crash % 0.0]))
    ws, cs = warned.summary(), cold.summary()
    assert ws["num_finished"] == cs["num_finished"] == 400
    assert ws["migration"]["num_drain_migrations"] > 0 and cs["migration"]["num_drain_migrations"] == 0
    # it took nothing new for 4 s and moved its decodes out: far fewer requests lost at the crash
    assert ws["cluster"]["num_rerouted"] < 0.5 * cs["cluster"]["num_rerouted"]
    lost = [r for r in warned.requests if r.extra.get("num_reroutes")]
    assert all(r.arrival_s < 4.0 for r in lost)  # only requests it took before the notice
    fast = simulate(load_scenario(None, MIG + [crash % 4.0, "engine.fast_forward=false"]))
    assert outcome(fast) == outcome(warned)


def test_a_warning_without_migration_is_refused():
    from servesim.errors import InputError

    with pytest.raises(InputError, match="warning_s drains the replica by migration"):
        load_scenario(None, BUSY + ["replicas=2", "faults.crashes=[{replica: 0, at_s: 1, warning_s: 2}]"])
