"""SGLang H200 0.5.6.post2, AIConfigurator's eval campaign: its KV cache is the checkpoints' own 16 bits
(silicon.SGLANG_CHECKPOINT_KV: the generator passes `--kv-cache-dtype auto`, which SGLang resolves to BF16 for a
block-FP8 checkpoint that names no FP8 KV scheme), and the release's GPU time per sequence was refitted with it
(calibration_serving.yaml). Every other campaign keeps servesim's `auto` and the per-GPU constants."""

from __future__ import annotations

import pytest

from servesim.perf import build_perf_model
from servesim.validation.silicon import SGLANG_CHECKPOINT_KV, row_scenario

from tests.validation.silicon_rows import silicon_row

# Llama-3.1-8B block-FP8 on one H200, 4,000 / 2,000 at 128 users: a row of the eval campaign
LLAMA = {"backend": "sglang", "backend_version": "0.5.6.post2", "model_path": "meta-llama/Llama-3.1-8B-Instruct",
         "system": "h200_sxm", "gemm_quant_mode": "fp8_block", "moe_quant_mode": "", "tp_size": "1", "moe_tp_size": "",
         "moe_ep_size": "", "attention_dp_size": "", "isl": "4000", "osl": "2000", "concurrency": "128", "batch_size": "128"}
QWEN = {**LLAMA, "model_path": "Qwen/Qwen3-235B-A22B-FP8", "gemm_quant_mode": "fp8_block", "moe_quant_mode": "fp8_block",
        "tp_size": "2", "moe_tp_size": "2", "moe_ep_size": "1", "concurrency": "4", "batch_size": "4"}


def _model(row=LLAMA, overrides=None, kv=None, **changes):
    s = row_scenario(silicon_row(0, **{**row, **changes}), overrides=overrides)
    perf = s.perf if kv is None else s.perf.model_copy(update={"kv_cache_dtype": kv})
    return s, build_perf_model(s.model, s.gpu, s.tp, s.dtype, perf)


def test_the_eval_campaign_plays_the_checkpoints_16_bit_cache():
    assert SGLANG_CHECKPOINT_KV == frozenset({("h200_sxm", "0.5.6.post2")})
    for row in (LLAMA, QWEN):
        scenario, model = _model(row)
        assert scenario.perf.kv_cache_dtype == "bf16"
        assert model.kv_cache_dtype == "bf16" and model.dtype == "fp8"  # FP8 weights, 16-bit KV


@pytest.mark.parametrize("changes", [
    {"backend_version": "0.5.9"},             # another release of H200 (its InferenceMAX scripts' rows aside)
    {"system": "b300_sxm", "backend_version": "0.5.10.post1"},  # another mixed-chunk campaign of the generator
    {"backend": "vllm", "backend_version": "0.18.0"},
])
def test_other_campaigns_keep_servesims_auto(changes):
    scenario, model = _model(**changes)
    assert scenario.perf.kv_cache_dtype == "auto"
    assert model.kv_cache_dtype == "fp8"


def test_the_release_refitted_its_gpu_time_per_sequence_with_it():
    assert _model()[1].constants.seq_gpu_s == 7.5e-06
    assert _model(backend_version="0.5.9")[1].constants.seq_gpu_s == 3.0e-05  # the (GPU, engine) value


def test_a_long_context_decode_reads_twice_the_kv_and_costs_less_per_sequence():
    _, shipped = _model()
    _, fp8 = _model(kv="fp8")
    assert shipped.kv_bytes_per_token == 2 * fp8.kv_bytes_per_token
    ctxs = [5000] * 128  # TP 1 at 128 users, 4,000 in and half of 2,000 out: the KV reads dominate
    fp8_s, bf16_s = fp8.step_breakdown([], ctxs), shipped.step_breakdown([], ctxs)
    assert bf16_s.attention_s == pytest.approx(2 * fp8_s.attention_s)
    # measured TPOT 30.0 ms; with FP8 KV and 30 us a sequence the step was 19.8 ms
    assert 0.026 < bf16_s.total_s < 0.032
    _, before = _model(kv="fp8", overrides={"seq_gpu_s": 3.0e-05})
    assert before.step_time_s([], ctxs) < 0.021
