"""Prefill/decode disaggregation end to end: one request's exact timeline, who emits the first
token, reservations that wait for the receiver's blocks, conditional disaggregation, and the
summary section."""

from __future__ import annotations

import pytest

from servesim import load_scenario, simulate
from servesim.cluster.network import LINK_KINDS
from servesim.workload.request import RequestState

ONE = ["workload.trace=null", "workload.num_requests=1", "workload.arrival.rate_per_s=1",
       "workload.lengths.prompt_tokens=2000", "workload.lengths.output_tokens=10"]
PD = "pools=[{name: p, role: prefill}, {name: d, role: decode, gpus_per_node: %d}]"


def _one(extra: list[str], gpus_per_node: int = 8):
    return simulate(load_scenario(None, ONE + [PD % gpus_per_node] + extra), keep_steps=True)


@pytest.mark.parametrize("gpus_per_node,kind", [(8, "nvlink4"), (1, "ib-ndr")])
def test_one_request_prefills_moves_and_decodes(gpus_per_node, kind):
    res = _one([], gpus_per_node)
    req = res.requests[0]
    p, d = res.replicas
    assert req.state == RequestState.FINISHED and req.replica == 1
    # the prefill replica ran the prompt in one step and emitted the first token there
    assert len(p.steps) == 1 and int(p.steps.prefill_tokens[0]) == 2000
    assert req.first_token_s == pytest.approx(float(p.steps.end_s[0]))
    # the KV crossed the link (2000 tokens x 128 KiB) and the decode replica's first step starts then
    link = LINK_KINDS[kind]
    expected_s = 2000 * 131072 / (link.bandwidth_GBps * 1e9) + link.latency_s + 32 * link.per_message_s
    assert float(d.steps.start_s[0]) - float(p.steps.end_s[0]) == pytest.approx(expected_s, rel=1e-9)
    assert int(d.steps.prefill_tokens.sum()) == 0 and int(d.steps.output_tokens.sum()) == 9
    s = res.summary()["disaggregation"]
    key = "intra" if gpus_per_node == 8 else "inter"
    assert list(s["links"]) == [key] and s["num_transfers"] == 1 and s["kv_bytes"] == 2000 * 131072
    assert s["transfer_time_s"]["max"] == pytest.approx(expected_s, rel=1e-9)
    assert req.moves == [(0, 0), (2, 1)]  # the first token's run on replica 0, the rest on 1


def test_decode_side_emits_the_first_token_after_recomputing_the_last_prompt_token():
    res = _one(["disaggregation.first_token=decode"])
    req = res.requests[0]
    p, d = res.replicas
    assert int(p.steps.output_tokens.sum()) == 0
    assert int(d.steps.prefill_tokens[0]) == 1 and int(d.steps.output_tokens.sum()) == 10
    assert req.first_token_s == pytest.approx(float(d.steps.end_s[0]))
    split = res.summary()["disaggregation"]["ttft_split_mean_s"]
    ttft = req.first_token_s - req.arrival_s
    assert split["queue_s"] + split["prefill_s"] + split["transfer_wait_s"] + split["transfer_s"] < ttft


def test_layerwise_overlap_shortens_the_exposed_transfer():
    off, on = _one([], 1), _one(["network.layerwise_overlap=true"], 1)
    t_off = off.summary()["disaggregation"]["transfer_time_s"]["max"]
    t_on = on.summary()["disaggregation"]["transfer_time_s"]["max"]
    link = LINK_KINDS["ib-ndr"]
    fixed = link.latency_s + 32 * link.per_message_s
    # a 2000-token prefill takes far longer than the transfer: only the last layer is exposed
    assert t_on - fixed == pytest.approx((t_off - fixed) / 32, rel=1e-6)


BUSY = ["workload.trace=null", "workload.arrival.process=poisson", "workload.arrival.rate_per_s=20",
        "workload.num_requests=200", "workload.lengths.dataset=sharegpt"]


def test_reservations_wait_for_the_decode_replicas_blocks_and_every_request_ends():
    res = simulate(load_scenario(None, BUSY + [
        "pools=[{name: p, role: prefill, replicas: 2}, {name: d, role: decode, engine: {gpu_memory_utilization: 0.25}}]"]))
    s = res.summary()
    assert s["num_finished"] == 200  # (invariants: every block back, every request terminal)
    dis = s["disaggregation"]
    assert dis["num_transfers"] == 200 and dis["transfer_wait_s"]["max"] > 0.1
    assert dis["busy_share_by_role"]["decode"] > dis["busy_share_by_role"]["prefill"]


def test_conditional_disaggregation_prefills_short_prompts_on_the_decode_replica():
    pools = "pools=[{name: p, role: prefill}, {name: d, role: decode}]"
    res = simulate(load_scenario(None, BUSY + [pools, "disaggregation.conditional=dynamo",
                                               "disaggregation.max_local_prefill_length=200"]))
    dis = res.summary()["disaggregation"]
    short = sum(r.prompt_len <= 200 for r in res.requests)  # no prefix hits in this workload
    assert dis["num_local_prefills"] == short and dis["num_transfers"] == 200 - short
    assert 0 < short < 200
    everything_local = simulate(load_scenario(None, BUSY + [pools, "disaggregation.conditional=llm-d",
                                                            "disaggregation.non_cached_tokens=100000"]))
    assert everything_local.summary()["disaggregation"]["num_transfers"] == 0


def test_a_mixed_pool_serves_its_requests_whole():
    res = simulate(load_scenario(None, BUSY + [
        "pools=[{name: p, role: prefill}, {name: m}, {name: d, role: decode}]", "router=round-robin"]))
    on_mixed = [r for r in res.requests if r.replica == 1]
    assert len(on_mixed) == 100 and all(not r.moves for r in on_mixed)
    assert res.summary()["disaggregation"]["num_transfers"] == 100


def test_no_disaggregation_section_without_roles():
    res = simulate(load_scenario(None, BUSY + ["replicas=2"]))
    assert "disaggregation" not in res.summary() and res.disaggregation is None
