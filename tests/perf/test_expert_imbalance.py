"""Expert parallelism at small batches: a MoE layer waits for the EP rank that drew the most experts."""

from __future__ import annotations

import pytest

from servesim.perf import PerfConfig, build_perf_model, roofline
from servesim.perf.models import expert_params


def test_busiest_rank_by_hand() -> None:
    # 4 experts, top 2, one token: each expert touched with q = 1/2; 2 ranks of 2 experts each.
    # P(count <= 0) = 1/4, P(count <= 1) = 3/4: E[max] = (1 - 1/16) + (1 - 9/16) = 1.375 (mean 1.0)
    assert roofline.experts_touched_busiest_rank(4, 2, 1, 2) == pytest.approx(1.375, abs=1e-12)
    assert roofline.experts_touched(4, 2, 1) / 2 == 1.0


def test_busiest_rank_lies_between_the_mean_and_all_of_the_ranks_experts() -> None:
    # DeepSeek-V3 / R1: 256 experts, top 8, EP 8 (32 experts a rank)
    prev = 0.0
    for tokens in (1, 2, 4, 8, 16, 64, 256):
        mean = roofline.experts_touched(256, 8, tokens) / 8
        busiest = roofline.experts_touched_busiest_rank(256, 8, tokens, 8)
        assert mean < busiest <= 32.0 and busiest > prev
        prev = busiest
    # at 4 tokens the busiest rank loads 6.6 experts, 1.7x the mean of 3.8
    assert roofline.experts_touched_busiest_rank(256, 8, 4, 8) == pytest.approx(6.56, abs=0.01)
    assert roofline.experts_touched_busiest_rank(256, 8, 4096, 8) == pytest.approx(32.0, abs=1e-9)
    # one rank is the mean
    assert roofline.experts_touched_busiest_rank(256, 8, 4, 1) == pytest.approx(roofline.experts_touched(256, 8, 4))


def test_all_tp_reads_the_mean_and_ep_the_busiest_rank() -> None:
    tp = build_perf_model("deepseek-v3", "h200", tp=8, dtype="fp8", config=PerfConfig(engine="trtllm"))
    ep = build_perf_model("deepseek-v3", "h200", tp=8, dtype="fp8", config=PerfConfig(engine="trtllm", moe_ep_size=8,
                                                                                    moe_a2a_backend="none"))
    m = tp.model_spec
    # all-TP: exactly main's expression (results of every run without EP unchanged)
    assert tp.terms.expert_weights_read(4) == roofline.experts_touched(256, 8, 4) * expert_params(m) / 8
    assert ep.terms.expert_weights_read(4) == roofline.experts_touched_busiest_rank(256, 8, 4, 8) * expert_params(m)
    # a 4-sequence decode step is slower with EP; with every expert touched the two read the same
    # (the extra time is the extra expert bytes at the memory roofline: the GEMMs of 4 tokens are memory-bound)
    extra_bytes = m.num_moe_layers * (ep.terms.expert_weights_read(4) - tp.terms.expert_weights_read(4)) * 1.0  # fp8
    extra_s = extra_bytes / (tp.constants.eta_memory * tp.gpu_spec.hbm_bw_bytes_s)
    assert extra_s > 1.5e-3
    assert ep.step_time_s([], [1500] * 4) - tp.step_time_s([], [1500] * 4) == pytest.approx(extra_s, rel=0.02)
    assert ep.terms.expert_weights_read(8192) == pytest.approx(tp.terms.expert_weights_read(8192), rel=1e-12)


def test_ep_decode_fast_path_keeps_stepping_bit_for_bit() -> None:
    import numpy as np
    pm = build_perf_model("deepseek-v3", "b200", tp=8, dtype="fp8", config=PerfConfig(engine="sglang", moe_ep_size=8))
    ctxs = np.array([1000, 1200, 900, 4000])
    fast = pm.decode_step_times_s(ctxs, 5)
    assert list(fast) == [pm.step_time_s([], list(ctxs + j)) for j in range(5)]
