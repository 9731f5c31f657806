"""mixed_prefill_slowdown: the prompt tokens of a step that also decodes cost that share more of
their own per-token time (GEMMs, element-wise work, all-reduces); off by default."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.errors import InputError
from servesim.perf import build_perf_model
from servesim.perf.config import PerfConfig

SLOWDOWN = 0.5


def _model(engine: str = "vllm", model: str = "llama-3.1-8b", **overrides):
    return build_perf_model(model, "h100-sxm", 1, "bf16", PerfConfig(engine=engine, overrides=overrides))


def test_off_by_default_and_zero_changes_nothing_bit_for_bit():
    plain = _model()
    assert plain.constants.mixed_prefill_slowdown == 0.0
    zero = _model(mixed_prefill_slowdown=0.0)
    for prefills, decodes in (([], [1000] * 64), ([(2048, 0)], [500] * 7), ([(8, 100)] * 4, []), ([(300, 64)], [90])):
        assert zero.step_time_s(prefills, decodes) == plain.step_time_s(prefills, decodes)
    assert zero.chunk_time_fn(12, 2048)(4096, 9000) == plain.chunk_time_fn(12, 2048)(4096, 9000)


@pytest.mark.parametrize("engine", ["vllm", "sglang"])  # additive CPU, and CPU overlapped (a GPU-side term)
def test_only_prompt_tokens_beside_decodes_pay_it(engine):
    base = _model(engine, step_overhead_s=0.0, seq_overhead_s=0.0)
    mixed = _model(engine, step_overhead_s=0.0, seq_overhead_s=0.0, mixed_prefill_slowdown=SLOWDOWN)
    # Decode-only and prefill-only steps: unchanged, bit for bit.
    assert mixed.step_time_s([], [1024] * 64) == base.step_time_s([], [1024] * 64)
    assert mixed.step_time_s([(4096, 0), (512, 100)], []) == base.step_time_s([(4096, 0), (512, 100)], [])
    # Mixed steps: the share of the prompt tokens' own per-token time (not the decodes', not the
    # cached context's attention): linear + element-wise + all-reduce terms of those tokens alone.
    t = base.terms
    for prefills, decodes, prompt_tokens in (([(4096, 0)], [800] * 9, 4096), ([(512, 0), (512, 100)], [300] * 3, 1024),
                                             ([(1000, 7000)], [50], 1000)):
        own_s = t.linear_s(prompt_tokens) + t.other_s(prompt_tokens) + t.communication_s(prompt_tokens)
        diff = mixed.step_time_s(prefills, decodes) - base.step_time_s(prefills, decodes)
        assert diff == pytest.approx(SLOWDOWN * own_s, rel=1e-9)
        assert diff > 0.0
    # Reported beside the element-wise work, not as attention.
    b, m = base.step_breakdown([(1024, 0)], [700] * 4), mixed.step_breakdown([(1024, 0)], [700] * 4)
    assert m.attention_s == b.attention_s
    own_s = t.linear_s(1024) + t.other_s(1024) + t.communication_s(1024)
    assert m.other_s - b.other_s == pytest.approx(SLOWDOWN * own_s, rel=1e-9)
    assert m.total_s == mixed.step_time_s([(1024, 0)], [700] * 4)


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_fast_paths_stay_bit_identical_with_the_term_on(engine):
    pm = _model(engine, mixed_prefill_slowdown=SLOWDOWN, eager_layer_s=0.2e-3)
    ctxs = [700, 900, 1100] * 4
    assert pm.chunk_time_fn(12, 2048)(4096, sum(ctxs)) == pm.step_time_s([(2048, 4096)], ctxs)
    assert pm.chunk_time_fn(0, 2048)(4096, 0) == pm.step_time_s([(2048, 4096)], [])  # no decodes: no term
    # Decode-only and verify-only steps never pay it; a prompt chunk beside verify chunks pays it on its
    # own tokens (the verify chunks are the decodes beside it).
    assert pm.decode_step_times_s(np.array(ctxs), 3)[2] == pm.step_time_s([], [c + 2 for c in ctxs])
    assert pm.verify_time_fn(8, 4)(8 * 700) == pm.step_time_s([(4, 700)] * 8, [], 8)
    assert pm.chunk_verify_time_fn(4, 3, 256)(0, 4 * 900) == pm.step_time_s([(256, 0)] + [(3, 900)] * 4, [], 4)


def test_attention_dp_ranks_pay_it_per_rank_with_a_mixed_batch():
    def dp(**overrides):
        return build_perf_model("deepseek-v3", "h200", 8, "fp8", PerfConfig(
            engine="vllm", data_parallel_size=2, moe_ep_size=16, moe_a2a_backend="deepep", overrides=overrides))
    base, mixed = dp(), dp(mixed_prefill_slowdown=SLOWDOWN)
    # Rank 0 prefills beside its decodes (the slowest rank), rank 1 only decodes.
    batches = [([(2048, 0)], [900] * 4), ([], [900] * 4)]
    diff = mixed.lockstep_step_time_s(batches) - base.lockstep_step_time_s(batches)
    t = mixed.rank.terms
    own_s = t.linear_s(2048) + t.other_s(2048) + t.communication_s(2048)  # the rank's terms (its TP group)
    assert diff == pytest.approx(SLOWDOWN * own_s, rel=1e-6)
    prefill_only = [([(2048, 0)], []), ([], [900] * 4)]
    assert mixed.lockstep_step_time_s(prefill_only) == base.lockstep_step_time_s(prefill_only)


def test_negative_values_are_refused():
    with pytest.raises(InputError, match="constant 'mixed_prefill_slowdown' must be in \\[0, inf\\]|must be >= 0"):
        _model(mixed_prefill_slowdown=-1e-9)
