"""Hybrid linear-attention models (Gated DeltaNet: Qwen3-Next, Qwen3.5) priced as what they are:
their own projections, a fixed recurrent state read and written per sequence and step, a chunked
prefill linear in the prompt, KV only for the full-attention layers, the running sequences' states
off the KV budget; and every fast path still bit-identical to step_time_s."""

from __future__ import annotations

import numpy as np
import pytest

from servesim import load_scenario, simulate
from servesim.perf import PerfConfig, build_perf_model
from servesim.perf.hf_config import spec_from_config
from servesim.perf.models import active_params, linear_state_bytes_per_seq, model_spec, total_params
from tests.cluster.helpers import assert_same_steps, outcome

QWEN35 = "qwen3.5-397b-a17b-gdn"  # (the validation rows play the sliding-window stand-in, qwen3.5-397b-a17b)
# Qwen3-Next-80B-A3B's config.json fields (Hugging Face; its shared_expert_intermediate_size 512 written as
# n_shared_experts 1 of the expert width): the same layout at another size.
QWEN3_NEXT = {"model_type": "qwen3_next", "num_hidden_layers": 48, "hidden_size": 2048, "num_attention_heads": 16,
              "num_key_value_heads": 2, "head_dim": 256, "intermediate_size": 5120, "moe_intermediate_size": 512,
              "num_experts": 512, "num_experts_per_tok": 10, "n_shared_experts": 1, "vocab_size": 151936,
              "full_attention_interval": 4, "linear_num_key_heads": 16, "linear_num_value_heads": 32,
              "linear_key_head_dim": 128, "linear_value_head_dim": 128, "linear_conv_kernel_dim": 4}


def test_the_config_names_the_layer_kinds():
    m = model_spec(QWEN35)
    assert (m.num_linear_layers, m.num_attention_layers, m.sliding_window) == (45, 15, None)
    la = m.linear_attention
    assert (la.key_dim, la.value_dim, la.conv_channels, la.state_bytes) == (2048, 8192, 12288, 4.0)
    # 397B total, 17B active (the model's name); the projections of both layer kinds and the gate count
    assert 390e9 < total_params(m) < 400e9 and 17.0e9 < active_params(m) < 17.5e9
    # the same layout from `layer_types` instead of the interval, and for Qwen3-Next
    kinds = ["full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(48)]
    a = spec_from_config("next", QWEN3_NEXT, "test")
    b = spec_from_config("next", {**QWEN3_NEXT, "full_attention_interval": None, "layer_types": kinds}, "test")
    assert a == b and a.num_linear_layers == 36 and a.attn_output_gate and a.linear_attention.state_bytes == 4.0
    assert spec_from_config("next", {**QWEN3_NEXT, "mamba_ssm_dtype": "bfloat16"}, "t").linear_attention.state_bytes == 2.0
    assert model_spec("qwen3-32b").linear_attention is None
    stand_in = model_spec("qwen3.5-397b-a17b")  # no linear_* keys: the sliding-window approximation, ungated
    assert stand_in.linear_attention is None and not stand_in.attn_output_gate and stand_in.num_window_layers == 45


def test_kv_for_the_attention_layers_and_a_fixed_state_per_sequence():
    pm = build_perf_model(QWEN35, "b200", tp=4, dtype="fp8", config=PerfConfig(engine="sglang"))
    assert pm.kv_bytes_per_token == 15 * 2 * 1 * 256 * 1  # 15 layers, K and V of one local 256-wide head, fp8
    # per GPU: 16 of the 64 value heads' 128 x 128 fp32 state and 3 x 12,288 / 4 conv inputs in 16 bit
    assert pm.state_bytes_per_seq() == 45 * (16 * 128 * 128 * 4 + 3 * 3072 * 2)
    # the running cap's states come off the KV budget, block for block
    free, capped = pm.num_gpu_blocks(16, 0.9, 8192), pm.num_gpu_blocks(16, 0.9, 8192, max_num_seqs=256)
    assert free - capped == pytest.approx(256 * pm.state_bytes_per_seq() / (16 * pm.kv_bytes_per_token), abs=1)
    dense = build_perf_model("qwen3-32b", "h100-sxm", tp=2)
    assert dense.num_gpu_blocks(16, 0.9, 8192, max_num_seqs=256) == dense.num_gpu_blocks(16, 0.9, 8192)


def test_decode_reads_and_writes_the_state_whatever_the_context():
    pm = build_perf_model(QWEN35, "b200", tp=4, dtype="fp8", config=PerfConfig(engine="vllm"))
    t = pm.terms
    bw = t.c.eta_attn_memory * t.gpu.hbm_bw_bytes_s
    assert t.linear_state_s(64) == pytest.approx(2 * 64 * pm.state_bytes_per_seq() / bw, rel=1e-12)
    # only the 15 attention layers read KV: a decode's time grows with its context at their rate alone
    short, long = pm.step_time_s([], [1000] * 8), pm.step_time_s([], [101_000] * 8)
    per_token = t.decode_s_per_ctx_token()
    assert long - short == pytest.approx(15 * per_token * 8 * 100_000, rel=1e-9)
    # the state is read and written by every sequence of the step, prompt or decode
    assert pm.step_breakdown([], [500] * 64).attention_s > t.linear_state_s(64) > 0


def test_the_chunked_prefill_is_linear_in_the_prompt():
    pm = build_perf_model(QWEN35, "h200", tp=8, dtype="fp8", config=PerfConfig(engine="sglang"))
    lin = pm.terms.linear_prefill_s_per_token()
    full_pair = pm._pair_full
    for prompt in (64, 1024, 8192):
        full = full_pair * prompt * prompt / 2.0
        assert pm._prefill_attention_s([(prompt, 0)], prompt) == pytest.approx(full + lin * prompt, rel=1e-12)
    # an 8k prompt costs its DeltaNet layers 8x a 1k prompt (not 64x: quadratic only in a chunk of 64)
    assert 0 < lin * 8192 == pytest.approx(8 * lin * 1024)


@pytest.mark.parametrize("gpu,tp,engine", [("b200", 4, "sglang"), ("h200", 8, "vllm")])
def test_every_fast_path_equals_step_time(gpu, tp, engine):
    pm = build_perf_model(QWEN35, gpu, tp=tp, dtype="fp8", config=PerfConfig(engine=engine))
    rng = np.random.default_rng(3)
    for n in (1, 7, 64):
        ctxs = [int(x) for x in rng.integers(1, 30_000, n)]
        assert pm.decode_time_fn(n)(sum(ctxs)) == pm.step_time_s([], ctxs)
        steps = pm.decode_step_times_s(np.array(ctxs), 5)
        assert list(steps) == [pm.step_time_s([], [c + j for c in ctxs]) for j in range(5)]
        cached = int(rng.integers(0, 20_000))
        assert pm.chunk_time_fn(n, 512)(cached, sum(ctxs)) == pm.step_time_s([(512, cached)], ctxs)
        assert pm.prompt_step_s(n, 700, sum(ctxs)) == pm.step_time_s([(700, 0)], ctxs)
        verify = [(4, c) for c in ctxs]
        assert pm.verify_time_fn(n, 4)(sum(ctxs)) == pm.step_time_s(verify, [], n)
        assert pm.verify_step_times_s(n, 4, np.array([sum(ctxs)]))[0] == pm.step_time_s(verify, [], n)
        assert pm.chunk_verify_time_fn(n, 3, 256)(cached, sum(ctxs)) == pm.step_time_s([(256, cached)] + [(3, c) for c in ctxs], [], n)


def test_a_hybrid_replica_fast_forwards_exactly():
    # (the sliding-window stand-in had no scalar decode or chunk form; the hybrid model has both)
    sets = ["workload.trace=null", "workload.arrival.process=poisson", "workload.arrival.rate_per_s=8",
            "workload.num_requests=150", "workload.lengths.dataset=sharegpt", f"model={QWEN35}", "gpu=b200", "tp=4",
            "dtype=fp8"]
    fast = simulate(load_scenario(None, sets), keep_steps=True)
    slow = simulate(load_scenario(None, sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert slow.num_fast_forwarded_steps == 0
    assert fast.num_fast_forwarded_steps > 0.5 * len(fast.steps)


def test_linear_state_is_zero_for_other_models():
    m = model_spec("deepseek-v3")
    assert linear_state_bytes_per_seq(m, 8, 2.0) == 0.0
    pm = build_perf_model("deepseek-v3", "h200", tp=8)
    assert pm.terms.linear_state_s(64) == 0.0 and pm.terms.linear_prefill_s_per_token() == 0.0
