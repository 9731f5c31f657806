"""vLLM B200 0.19.0's prompt attention (calibration_serving.yaml `vllm_context_attention`, docs/fidelity-history.md
"vLLM B200 0.19.0 MiniMax-M2.5: 8k prompts"): the release's prefill attention reaches 0.5 of the BF16 peak
(AIConfigurator's FlashInfer context-attention table), not the GPU's fitted 0.8; nothing else of a step moves,
and no other vLLM key changes."""

from __future__ import annotations

import pytest

from servesim.perf.roofline import causal_attention_pairs

from tests.validation.silicon_rows import minimax_perf_model

# MiniMax-M2.5 FP8 on 2 GPUs, 8k/1k at 4 users: the shape of the release's long-prompt rows
LONG = {"backend_version": "0.19.0", "tp_size": "2", "moe_tp_size": "2", "isl": "8192"}


def _model(overrides=None, **changes):
    return minimax_perf_model(overrides, **{**LONG, **changes})


@pytest.mark.parametrize(("system", "version", "quant", "eta"), [
    ("b200_sxm", "0.19.0", "fp8", 0.5),
    ("b200_sxm", "0.19.0", "nvfp4", 0.5),    # a release constant: both precisions run the same kernel
    ("b200_sxm", "0.17.0", "fp8", 0.8),      # other releases keep the GPU's value
    ("b200_sxm", "nightly-5b8c30d62b754b57", "nvfp4", 0.8),
    ("b300_sxm", "0.19.0", "fp8", 0.8),      # B300's own entry (prefill_ring)
])
def test_only_b200_0_19_0_takes_the_table_efficiency(system, version, quant, eta):
    assert _model(system=system, backend_version=version, gemm_quant_mode=quant).constants.eta_attn_compute == eta


def test_an_8k_prompt_pays_its_attention_at_half_the_peak_and_nothing_else_moves():
    new, old = _model(), _model(overrides={"eta_attn_compute": 0.8})
    prefill, decodes = [(8192, 0)], [8704] * 4
    b_new, b_old = new.step_breakdown(prefill, []), old.step_breakdown(prefill, [])
    # MiniMax's 62 layers x 24 query heads per GPU x (128 + 128) x 2 FLOPs a query-key pair, at 0.5 x 2.25 PFLOP/s
    flops = 62 * 2.0 * 24 * 256 * causal_attention_pairs(8192, 0, None)
    assert b_new.attention_s == pytest.approx(flops / (0.5 * 2250e12), rel=1e-9)
    assert b_new.attention_s - b_old.attention_s == pytest.approx(flops / 2250e12 * (1 / 0.5 - 1 / 0.8), rel=1e-9)
    assert 8.0e-3 < b_new.attention_s - b_old.attention_s < 9.0e-3  # about 8.5 ms more per 8,192-token prompt
    assert (b_new.linear_s, b_new.communication_s, b_new.other_s, b_new.overhead_s) == \
        (b_old.linear_s, b_old.communication_s, b_old.other_s, b_old.overhead_s)
    # decode steps read the KV cache: memory-bound, the same time bit for bit
    assert new.step_time_s([], decodes) == old.step_time_s([], decodes)
