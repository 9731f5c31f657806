"""Attention data parallelism in the perf model: memory per rank and the lock-step step time."""

from __future__ import annotations

import math

import pytest

from servesim.errors import InputError
from servesim.perf import PerfConfig, build_perf_model
from servesim.perf.attention_dp import DUMMY_BATCH, dp_weight_bytes_per_gpu, round_robin_split
from servesim.perf.models import model_spec

DP = PerfConfig(engine="trtllm", data_parallel_size=2, moe_tp_size=1, moe_ep_size=8)
TP = PerfConfig(engine="trtllm", moe_tp_size=1, moe_ep_size=8, moe_a2a_backend="none")


def _kv_tokens(pm, blocks_per_rank: int, ranks: int) -> int:
    return ranks * blocks_per_rank * 32


def test_dp_attention_doubles_kv_capacity_per_request_share() -> None:
    """DeepSeek's MLA latent is replicated on every TP rank: at TP 8 each GPU holds every request's
    KV, with 2 attention-DP ranks of TP 4 each GPU holds only its rank's requests. Same bytes per
    token per GPU, so the replica holds twice the tokens, less the attention weights that DP
    replicates (exactly the memory formula's difference)."""
    tp8 = build_perf_model("deepseek-v3", "b200", 8, "fp8", TP)
    dp2 = build_perf_model("deepseek-v3", "b200", 4, "fp8", DP)
    assert dp2.kv_bytes_per_token == tp8.kv_bytes_per_token  # MLA: not split by TP
    spec = model_spec("deepseek-v3")
    assert dp2.weight_bytes_per_gpu == dp_weight_bytes_per_gpu(spec, 1.0, 4, 2) > tp8.weight_bytes_per_gpu
    blocks_tp = tp8.num_gpu_blocks(32, 0.9, 4096)
    blocks_rank = dp2.num_gpu_blocks(32, 0.9, 4096)
    free_rank = 0.9 * dp2.hbm_bytes - dp2.weight_bytes_per_gpu - dp2.activation_peak_bytes(4096) - dp2.misc_bytes
    assert blocks_rank == math.floor(free_rank / (32 * dp2.kv_bytes_per_token))
    ratio = _kv_tokens(dp2, blocks_rank, 2) / _kv_tokens(tp8, blocks_tp, 1)
    assert 1.8 < ratio < 2.0  # twice the request share, less the replicated attention weights


def test_lock_step_is_the_slowest_ranks_time() -> None:
    pm = build_perf_model("deepseek-v3", "b200", 4, "fp8", DP)
    big = ([], [2000] * 64)
    small_a, small_b = ([], [100]), ([], [5000])  # same tokens, different attention work
    # the smaller rank's work does not count: only the slowest rank's, and the MoE on the padded tokens
    assert pm.lockstep_step_time_s([big, small_a]) == pm.lockstep_step_time_s([big, small_b])
    assert pm.lockstep_step_time_s([big, small_a]) == pm.lockstep_step_time_s([small_b, big])
    # once the other rank is the slowest, its work sets the step
    heavy = ([(4096, 0)], [])
    assert pm.lockstep_step_time_s([big, heavy]) > pm.lockstep_step_time_s([heavy, small_a]) > pm.lockstep_step_time_s([big, small_a])
    # an idle rank runs the one-token dummy batch
    assert pm.lockstep_step_time_s([big, ((), ())]) == pm.lockstep_step_time_s([big, DUMMY_BATCH])
    # the same sequences all on one rank are slower than dealt over both (lock-step waits)
    together = ([], [2000] * 128)
    assert pm.lockstep_step_time_s([together, ((), ())]) > pm.lockstep_step_time_s(round_robin_split([], together[1], 2))


def test_step_time_without_a_split_deals_round_robin_and_keeps_no_state() -> None:
    pm = build_perf_model("deepseek-v3", "b200", 4, "fp8", DP)
    prefills, ctxs = [(512, 0)], [300, 400, 500]
    dealt = pm.lockstep_step_time_s([([(512, 0)], [400]), ([], [300, 500])])
    assert pm.step_time_s(prefills, ctxs) == dealt
    # pricing another split (as the engine does with SchedulerOutput.rank_batches) leaves the
    # next round-robin price unchanged: the perf model holds no state between calls
    skewed = pm.lockstep_step_time_s([([(512, 0)], []), ([], [300, 400, 500])])
    assert skewed != dealt
    assert pm.step_time_s(prefills, ctxs) == dealt
    assert not hasattr(pm, "price_next")


@pytest.mark.parametrize("model, config, message", [
    ("llama-3.1-8b", PerfConfig(data_parallel_size=2), "needs a MoE model"),
    ("deepseek-v3", PerfConfig(data_parallel_size=2, moe_tp_size=1, moe_ep_size=4), "must equal tp 8"),
])
def test_bad_dp_configs_name_the_problem(model, config, message) -> None:
    with pytest.raises(InputError, match=message):
        build_perf_model(model, "b200", 4, "fp8", config)
