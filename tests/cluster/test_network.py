"""KV transfer sizes and times (pure functions), shared links, and placement on nodes."""

from __future__ import annotations

import pytest

from servesim.cluster.network import (LINK_KINDS, Link, NetworkConfig, exposed_bytes, fixed_time_s,
                                      kv_transfer_bytes, place_on_nodes, transfer_time_s)
from servesim.core.loop import EventLoop
from servesim.perf import build_perf_model
from servesim.perf.config import PerfConfig


def test_kv_bytes_follow_the_model_and_the_kv_dtype():
    # Llama-3.1-8B: 32 layers x 8 KV heads x 128 dims x (K and V) x 2 bytes = 128 KiB per token
    bf16 = build_perf_model("llama-3.1-8b", "h100-sxm", 1, "bf16")
    fp8 = build_perf_model("llama-3.1-8b", "h100-sxm", 1, "bf16", PerfConfig(kv_cache_dtype="fp8"))
    assert kv_transfer_bytes(1000, bf16.kv_bytes_per_token, 1) == 1000 * 32 * 8 * 128 * 2 * 2
    assert kv_transfer_bytes(1000, fp8.kv_bytes_per_token, 1) == 1000 * 32 * 8 * 128 * 2
    tp2 = build_perf_model("llama-3.1-8b", "h100-sxm", 2, "bf16")
    assert kv_transfer_bytes(1000, tp2.kv_bytes_per_token, 2) == kv_transfer_bytes(1000, bf16.kv_bytes_per_token, 1)


def test_transfer_time_on_an_idle_link():
    ib = LINK_KINDS["ib-ndr"]
    assert fixed_time_s(ib, 32) == pytest.approx(5e-6 + 32 * 10e-6)
    t = transfer_time_s(1e9, ib, num_links=2, num_layers=32)
    assert t == pytest.approx(1e9 / 100e9 + 5e-6 + 320e-6)


def test_layerwise_overlap_hides_all_but_the_last_layer_when_the_link_keeps_up():
    # 10 layers, prefill 1 s, link 100 B/s: 90 B can leave during the prefill
    assert exposed_bytes(50.0, 100.0, 1.0, 10) == pytest.approx(5.0)  # only the last layer's 5 B left
    assert exposed_bytes(1000.0, 100.0, 1.0, 10) == pytest.approx(1000.0 - 90.0)  # link-bound


def test_concurrent_transfers_share_a_link_equally():
    loop = EventLoop()
    link = Link("0-inter", 100.0, loop)
    ends = {}
    link.start(0.0, "a", 100.0, lambda t: ends.setdefault("a", t))
    loop.schedule(0.5, lambda t, _: link.start(t, "b", 100.0, lambda t2: ends.setdefault("b", t2)))
    loop.run()
    # a alone for 0.5 s (50 B), then both at 50 B/s: a's last 50 B take 1 s; b then alone
    assert ends["a"] == pytest.approx(1.5)
    assert ends["b"] == pytest.approx(2.0)
    assert link.busy_s == pytest.approx(2.0)
    assert link.bytes_sent == pytest.approx(200.0)
    assert link.max_flows == 2


def test_replicas_are_packed_on_nodes_in_order():
    # 8-GPU nodes: tp 4, 4 | tp 2 x 3, then a tp 4 that does not fit the 2 GPUs left
    assert place_on_nodes([4, 4, 2, 2, 2, 4], [8] * 6) == [0, 0, 1, 1, 1, 2]
    assert place_on_nodes([1, 1, 1], [1, 1, 1]) == [0, 1, 2]


def test_links_by_kind_or_spec_and_bad_ones():
    cfg = NetworkConfig(inter_node="ethernet-100g", intra_node={"bandwidth_GBps": 100, "latency_s": 0})
    assert cfg.inter_node.bandwidth_GBps == 12.5 and cfg.intra_node.bandwidth_GBps == 100
    with pytest.raises(ValueError, match="unknown link kind 'carrier-pigeon'; allowed: nvlink4"):
        NetworkConfig(inter_node="carrier-pigeon")
    with pytest.raises(Exception, match="bandwidth_GBps"):
        NetworkConfig(inter_node={"bandwidth_GBps": 0})
