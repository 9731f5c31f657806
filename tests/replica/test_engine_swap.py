"""Swap mechanics: the cost function, the CPU tier with reusable copies, and how the engine charges swaps."""

from __future__ import annotations

import pytest

from servesim.replica.kv_cache import KVCacheManager
from servesim.replica.swap import LAUNCH_S, SwapMechanics, num_copies, num_layers, swap_time_s
from tests.factories import ToyPerf, make_request


def test_vllm_v0_copies_every_block_of_every_layer_k_and_v():
    assert num_copies(10, 32, 1) == 640
    assert num_copies(10, 32, 4) == 3 * 64  # FastSwitch-style groups of 4 blocks
    assert swap_time_s(0, 16, ToyPerf(), SwapMechanics()) == 0.0
    # ToyPerf: 4 layers, 1 us per token over PCIe
    assert swap_time_s(10, 16, ToyPerf(), SwapMechanics()) == pytest.approx(80 * LAUNCH_S + 160e-6)
    assert swap_time_s(10, 16, ToyPerf(), SwapMechanics(blocks_per_copy=32)) == pytest.approx(8 * LAUNCH_S + 160e-6)


def test_layers_come_from_the_perf_model():
    from servesim.perf import build_perf_model

    perf = build_perf_model("llama-3.1-8b", "a100-80gb", 1, "bf16", None)
    assert num_layers(perf) == 32
    # A 1,000-token request on Llama-3.1-8B (128 KiB/token): vLLM v0 issues 63 x 32 x 2 copies,
    # whose launch cost dwarfs the bytes; block groups of 32 remove most of it.
    v0 = swap_time_s(63, 16, perf, SwapMechanics())
    groups = swap_time_s(63, 16, perf, SwapMechanics(blocks_per_copy=32))
    assert v0 > 3 * groups


def held(kv, req_id):
    return kv.num_blocks_of(req_id)


def test_cpu_tier_swap_out_in_and_capacity():
    kv = KVCacheManager(10, 16, False, num_cpu_blocks=5)
    a, b = make_request(0, 64, 10), make_request(1, 32, 10)
    assert kv.allocate_slots(a, 64) and kv.allocate_slots(b, 32)
    assert kv.swap_out(0) == 4 and kv.num_free_blocks == 8 and kv.num_free_cpu_blocks == 1
    assert kv.swap_out(1) is None and held(kv, 1) == 2  # CPU tier full: nothing changes
    assert kv.swap_in(0) == 4 and held(kv, 0) == 4 and kv.num_free_cpu_blocks == 5
    kv.free(0)
    kv.free(1)
    kv.check_all_free()


def test_cpu_copy_makes_the_next_swap_out_incremental():
    kv = KVCacheManager(10, 16, False, num_cpu_blocks=8)
    a = make_request(0, 64, 40)
    kv.allocate_slots(a, 64)
    assert kv.swap_out(0) == 4
    assert kv.swap_in(0, keep_cpu_copy=True) == 4
    assert kv.num_free_cpu_blocks == 4 and kv.num_cpu_copy_blocks() == 4  # the copy stays
    a.num_computed_tokens = 64
    kv.allocate_slots(a, 20)  # 84 tokens: 6 blocks
    assert kv.swap_out(0) == 2  # only the 2 new blocks move
    assert kv.num_cpu_blocks_of(0) == 6 and kv.num_cpu_copy_blocks() == 0
    kv.free_cpu(0)
    kv.check_all_free()


def test_turn_copy_is_reused_by_the_next_turn_and_reclaimed_when_needed():
    kv = KVCacheManager(20, 16, False, num_cpu_blocks=8)
    turn1 = make_request(0, 64, 16, session_id=7)
    kv.allocate_slots(turn1, 80)
    kv.swap_out(0)
    kv.swap_in(0, keep_cpu_copy=True)
    kv.free(0)
    kv.retain_cpu_copy(0, ("session", 7), max_blocks=80 // 16)
    assert kv.num_cpu_copy_blocks() == 5
    turn2 = make_request(1, 120, 10, session_id=7)  # prompt = turn 1's 80 tokens + 40 new
    kv.allocate_slots(turn2, 120)
    assert kv.swap_out(1, reuse_key=("session", 7)) == 8 - 5  # the first 5 blocks are on the CPU
    other = make_request(2, 32, 1)
    kv.allocate_slots(other, 32)
    assert kv.swap_out(2) is None  # 8 of 8 CPU blocks used by turn 2
    kv.free_cpu(1)
    kv.allocate_slots(make_request(3, 96, 1), 96)
    kv.free(2)
    kv.free(3)
    kv.check_all_free()


def test_copies_are_reclaimed_oldest_first():
    kv = KVCacheManager(20, 16, False, num_cpu_blocks=6)
    for i in range(2):
        r = make_request(i, 48, 1)
        kv.allocate_slots(r, 48)
        kv.swap_out(i)
        kv.swap_in(i, keep_cpu_copy=True)
    assert kv.num_free_cpu_blocks == 0 and kv.num_cpu_copy_blocks() == 6
    big = make_request(5, 48, 1)
    kv.allocate_slots(big, 48)
    assert kv.swap_out(5) == 3  # request 0's copy (the oldest) is dropped to make room
    assert kv.swap_out(0) == 3 and kv.num_cpu_copy_blocks() == 0  # no copy left: a full copy
    for i in (0, 5):
        kv.free_cpu(i)
    kv.free(1)
    kv.free_cpu(1)
    kv.check_all_free()
