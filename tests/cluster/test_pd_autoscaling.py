"""An autoscaler on a prefill or a decode pool, or on both (Dynamo's planner sizes its prefill and
decode workers apart): the spares take the pool's role and KV ports, a draining replica stops only
once its last KV hand-off is done, nothing is lost, and fast-forward stays exact."""

from __future__ import annotations

import re

import pytest

from servesim import load_scenario, simulate
from servesim.cluster.autoscalers.base import Capacity, replica_rps
from servesim.errors import InputError
from servesim.workload.request import RequestState
from tests.cluster.helpers import outcome

# Long answers on one decode replica with a small KV cache: decode is the bottleneck.
LOAD = ["workload.trace=null", "workload.arrival.process=poisson", "workload.arrival.rate_per_s=12",
        "workload.num_requests=500", "workload.lengths.prompt_tokens=[200, 800]",
        "workload.lengths.output_tokens=[200, 400]", "slo.ttft_s=2"]
PD = ("pools=[{name: p, role: prefill, replicas: 1}, "
      "{name: d, role: decode, replicas: 1, engine: {gpu_memory_utilization: 0.3, max_num_seqs: 32}}]")
SCALE = ["autoscaler.max_replicas=3", "autoscaler.interval_s=2", "autoscaler.cold_start.engine_start_s=1",
         "autoscaler.cold_start.cuda_graph_capture_s=1", "autoscaler.cold_start.container_start_s=0.5",
         "autoscaler.cold_start.storage=host_memory"]


def run(extra: list[str], fast_forward: bool = True):
    return simulate(load_scenario(None, [*LOAD, PD, *SCALE, *extra, f"engine.fast_forward={str(fast_forward).lower()}"]))


@pytest.mark.parametrize("scale_down", ["drain", "evict"])
def test_a_decode_pool_scales_up_under_decode_load_and_back(scale_down):
    sets = ["autoscaler.name=hpa", "autoscaler.pool=d", "autoscaler.target_value=16",
            "autoscaler.scale_down_stabilization_window_s=10", f"autoscaler.scale_down={scale_down}"]
    r = run(sets)
    assert all(q.state == RequestState.FINISHED and q.num_output_tokens == q.output_len for q in r.requests)
    # the spares are replicas 2 and 3, decode replicas: requests' decode ends there
    decoded_on = {q.replica for q in r.requests}
    assert {2, 3} <= decoded_on and 0 not in decoded_on  # (replica 0 only prefills)
    ups = [e for e in r.scale_events if e.action == "up"]
    downs = [e for e in r.scale_events if e.action == "down"]
    assert ups and downs and ups[0].time_s < downs[0].time_s  # up under the burst, down after it
    assert outcome(r) == outcome(run(sets, fast_forward=False))


def test_dynamo_planner_sizes_a_prefill_pool_by_prompts_and_a_decode_pool_by_answers():
    mixed = Capacity(10_000.0, 1_000.0, 256, 1000, 16, 30.0)
    prefill = Capacity(10_000.0, 1_000.0, 256, 1000, 16, 30.0, "prefill")
    decode = Capacity(10_000.0, 1_000.0, 256, 1000, 16, 30.0, "decode")
    assert replica_rps(mixed, 1000, 200) == 1 / (0.1 + 0.2)
    assert replica_rps(prefill, 1000, 200) == 1 / 0.1 and replica_rps(decode, 1000, 200) == 1 / 0.2
    # on the run: the planner in throughput mode scales the decode pool to what the answers need
    sets = ["autoscaler.name=dynamo-planner", "autoscaler.pool=d", "autoscaler.interval_s=5"]
    r = run(sets)
    assert max(e.desired for e in r.scale_events) >= 2 and r.summary()["num_finished"] == 500
    assert outcome(r) == outcome(run(sets, fast_forward=False))


def test_one_planner_scales_the_prefill_and_the_decode_pool_each_by_its_own_capacity():
    # Long prompts and long answers at 20 requests/s: one prefill replica cannot keep up with the
    # prompts, nor one small decode replica with the answers. `pool: [p, d]` runs a decision loop
    # per pool, the prefill pool sized by prompts, the decode pool by answers.
    sets = ["autoscaler.name=dynamo-planner", "autoscaler.pool=[p, d]", "autoscaler.interval_s=2",
            "workload.arrival.rate_per_s=20", "workload.lengths.prompt_tokens=[3000, 5000]"]
    r = run(sets)
    assert r.summary()["num_finished"] == 500
    ups = {e.pool for e in r.scale_events if e.action == "up"}
    assert ups == {"p", "d"}
    # each pool's decisions every 2 s, the prefill pool's first at each tick
    assert [e.pool for e in r.scale_events[:4]] == ["p", "d", "p", "d"]
    # the spares, after the fixed replicas: 2 and 3 prefill, 4 and 5 decode
    assert [rep.pool for rep in r.replicas] == ["p", "d", "p", "p", "d", "d"]
    prefilled = [int(rep.steps.prefill_tokens.sum()) for rep in r.replicas]
    assert prefilled[2] > 0 and prefilled[3] > 0  # the prefill pool's spares ran prompts
    assert any(q.replica == 4 for q in r.requests)  # and a decode spare decoded answers
    assert outcome(r) == outcome(run(sets, fast_forward=False))


def test_each_pool_has_its_own_bounds():
    # At most one prefill spare and two decode spares: the spares follow every fixed replica,
    # the prefill pool's first; neither pool passes its own maximum
    sets = ["autoscaler.name=dynamo-planner", "autoscaler.pool=[p, d]", "autoscaler.interval_s=2",
            "autoscaler.max_replicas={p: 2, d: 3}", "workload.arrival.rate_per_s=20",
            "workload.lengths.prompt_tokens=[3000, 5000]"]
    r = run(sets)
    assert [rep.pool for rep in r.replicas] == ["p", "d", "p", "d", "d"]
    most = {pool: max(e.desired for e in r.scale_events if e.pool == pool) for pool in "pd"}
    assert most == {"p": 2, "d": 3}  # (the planner asks for more of both at this load: clamped to each)
    assert r.summary()["num_finished"] == 500
    assert outcome(r) == outcome(run(sets, fast_forward=False))


@pytest.mark.parametrize("sets, message", [
    (["autoscaler.pool=[p, d]", "autoscaler.max_replicas={p: 2}"],
     "autoscaler.max_replicas: a count per pool names each scaled pool once (got p; scaled: p, d)"),
    (["autoscaler.pool=d", "autoscaler.min_replicas={d: 1, p: 1}"],
     "autoscaler.min_replicas: a count per pool names each scaled pool once (got d, p; scaled: d)"),
    (["autoscaler.pool=[p, d]", "autoscaler.min_replicas={p: 1, d: 5}"],
     "autoscaler: pool 'd': min_replicas (5) is above max_replicas (3)"),
    (["autoscaler.pool=[p, d]", "autoscaler.max_replicas={p: 3, d: 0}"],
     "autoscaler.max_replicas: Input should be greater than or equal to 1 (got 0)"),
])
def test_bad_bounds_per_pool_are_refused(sets, message):
    with pytest.raises(InputError, match=re.escape(message)):
        run(["autoscaler.name=hpa", *sets])


@pytest.mark.parametrize("pool, message", [
    ("[p, p]", "autoscaler: pool ['p', 'p']: a list names each pool to scale once, and at least one"),
    ("[p, x]", "autoscaler.pool: no pool 'x' (pools: p, d)"),
    ("[]", "autoscaler: pool []: a list names each pool to scale once, and at least one"),
])
def test_a_bad_list_of_pools_is_refused(pool, message):
    with pytest.raises(InputError, match=re.escape(message)):
        run(["autoscaler.name=hpa", f"autoscaler.pool={pool}"])


def test_a_prefill_pool_scales_too():
    sets = ["autoscaler.name=hpa", "autoscaler.pool=p", "autoscaler.target_value=1",
            "workload.lengths.prompt_tokens=[6000, 8000]", "workload.lengths.output_tokens=[2, 8]"]
    r = run(sets)
    assert r.summary()["num_finished"] == 500 and any(e.action == "up" for e in r.scale_events)
    assert outcome(r) == outcome(run(sets, fast_forward=False))


def test_a_decode_replica_picked_before_it_stopped_is_picked_again():
    # Conditional disaggregation picks the decode replica at arrival; when the prompt is done
    # that replica may have been scaled in. The KV went to it all the same, and the request ran
    # on a stopped replica (its restart then found it: "a stopped replica held requests").
    sets = ["workload.trace=null", "workload.arrival.process=poisson", "workload.num_requests=300",
            "workload.lengths.dataset=sharegpt", "workload.arrival.rate_per_s=4",
            "pools=[{name: p, role: prefill, replicas: 2}, {name: d, role: decode, replicas: 2, "
            "engine: {gpu_memory_utilization: 0.3}}, {name: m, replicas: 1}]",
            "autoscaler.name=llm-d-wva", "autoscaler.pool=d", "autoscaler.max_replicas=3", "autoscaler.scale_down=evict",
            "autoscaler.interval_s=2", "autoscaler.cold_start.engine_start_s=1", "autoscaler.cold_start.cuda_graph_capture_s=1",
            "scheduler.name=orca", "faults.crashes=[{replica: 0, at_s: 15, recovery_s: 10}]", "disaggregation.conditional=llm-d"]
    r = simulate(load_scenario(None, sets))
    assert r.summary()["num_finished"] == 300
    assert outcome(r) == outcome(simulate(load_scenario(None, sets + ["engine.fast_forward=false"])))


@pytest.mark.parametrize("sets, message", [
    (["autoscaler.name=kpa", "autoscaler.pool=d", "autoscaler.min_replicas=0"],
     "min_replicas 0 scales to zero only without prefill/decode pools"),
    (["autoscaler.name=dynamo-planner", "autoscaler.pool=d", "autoscaler.mode=load"],
     "mode load sizes replicas by their queued prefill work, which decode pool 'd' has none of"),
])
def test_what_a_prefill_decode_cluster_cannot_scale_is_refused(sets, message):
    with pytest.raises(InputError, match=message):
        run(sets)
