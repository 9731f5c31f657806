"""Catalogue contents: every GPU and model the issue names, with the spec's numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from servesim.errors import InputError
from servesim.perf import build_perf_model
from servesim.perf.hardware import gpu_names, gpu_spec
from servesim.perf.models import active_params, kv_elements_per_token_layer, model_spec, total_params

ISSUE_GPUS = ["a100-40gb", "a100-80gb", "h100-sxm", "h200", "l40s", "a10g", "l4", "rtx-4090", "mi300x", "b200"]


@pytest.mark.parametrize("name", ISSUE_GPUS)
def test_gpu_entries_complete(name: str) -> None:
    g = gpu_spec(name.upper())
    assert g.name == name
    assert g.peak_flops["bf16"] > 0 and g.hbm_bytes > 20e9 and g.hbm_bw_bytes_s > 0
    assert g.scaleup_bw_bytes_s > 0 and g.scaleup_latency_s > 0 and g.pcie_bw_bytes_s > 0
    assert g.tdp_w > 0 and g.price_usd_h > 0 and g.price_date


def test_gpu_spec_numbers() -> None:
    h100 = gpu_spec("h100-sxm")
    assert h100.peak_flops["bf16"] == 989.4e12 and h100.peak_flops["fp8"] == 1978.9e12
    assert h100.hbm_bw_bytes_s == 3350e9 and h100.tdp_w == 700
    assert "fp8" not in gpu_spec("a100-80gb").peak_flops  # Ampere has no FP8 tensor cores
    assert gpu_spec("b200").peak_flops["fp4"] == 9000e12
    assert set(ISSUE_GPUS) <= set(gpu_names())


# (name, total params in billions, active, KV bytes/token at BF16) from shared/specs/perf-model.md §2
SPEC_MODELS = [
    ("llama-2-7b", 6.74, 6.74, 524_288),
    ("llama-2-13b", 13.02, 13.02, 819_200),
    ("llama-2-70b", 68.98, 68.98, 327_680),
    ("llama-3.1-8b", 8.03, 8.03, 131_072),
    ("llama-3.1-70b", 70.55, 70.55, 327_680),
    ("llama-3.1-405b", 405.9, 405.9, 516_096),
    ("mistral-7b", 7.24, 7.24, 131_072),
    ("mixtral-8x7b", 46.7, 12.9, 131_072),
    ("qwen2.5-7b", 7.62, 7.62, 57_344),
    ("qwen2.5-32b", 32.8, 32.8, 262_144),
    ("qwen2.5-72b", 72.7, 72.7, 327_680),
    ("qwen3-30b-a3b", 30.5, 3.3, 98_304),
    ("deepseek-v3", 671, 37, 70_272),
    ("opt-13b", 12.85, 12.85, 819_200),
    ("opt-66b", 65.7, 65.7, 2_359_296),
    ("opt-175b", 175, 175, 4_718_592),
    ("falcon-180b", 179, 179, 163_840),
]


@pytest.mark.parametrize(("name", "params_b", "active_b", "kv_bytes"), SPEC_MODELS)
def test_model_sizes_match_spec(name: str, params_b: float, active_b: float, kv_bytes: int) -> None:
    m = model_spec(name)
    assert total_params(m) / 1e9 == pytest.approx(params_b, rel=0.012)
    assert active_params(m) / 1e9 == pytest.approx(active_b, rel=0.03)
    assert m.num_layers * kv_elements_per_token_layer(m, 1) * 2 == kv_bytes


def test_architecture_features() -> None:
    assert model_spec("mistral-7b").sliding_window == 4096
    assert model_spec("mistral-7b-v0.3").sliding_window is None
    ds = model_spec("deepseek-v3")
    assert ds.mla is not None and ds.mla.kv_lora_rank == 512
    assert ds.moe is not None and (ds.moe.num_experts, ds.moe.top_k, ds.moe.num_shared_experts, ds.moe.num_dense_layers) == (256, 8, 1, 3)
    assert not model_spec("opt-13b").gated_mlp and model_spec("opt-13b").tied_embeddings


def test_import_hf_config_matches_catalogue(tmp_path: Path) -> None:
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_hidden_layers": 32, "hidden_size": 4096,
              "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256,
              "tie_word_embeddings": False, "torch_dtype": "bfloat16", "rope_theta": 500000.0}
    folder = tmp_path / "my-llama"
    folder.mkdir()
    path = folder / "config.json"
    path.write_text(json.dumps(config))
    imported = build_perf_model(str(path), "h100-sxm")
    catalogued = build_perf_model("llama-3.1-8b", "h100-sxm")
    assert imported.model_name == "my-llama"
    assert imported.kv_bytes_per_token == catalogued.kv_bytes_per_token
    assert imported.weight_bytes_per_gpu == catalogued.weight_bytes_per_gpu
    assert imported.step_time_s([(100, 0)], [500]) == catalogued.step_time_s([(100, 0)], [500])


def test_import_moe_mla_config(tmp_path: Path) -> None:
    config = {"model_type": "deepseek_v3", "num_hidden_layers": 4, "hidden_size": 1024, "num_attention_heads": 16,
              "num_key_value_heads": 16, "intermediate_size": 4096, "moe_intermediate_size": 256, "n_routed_experts": 32,
              "n_shared_experts": 2, "num_experts_per_tok": 4, "first_k_dense_replace": 1, "q_lora_rank": 0,
              "kv_lora_rank": 128, "qk_rope_head_dim": 32, "qk_nope_head_dim": 64, "v_head_dim": 64, "vocab_size": 1000}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    pm = build_perf_model(str(path), "a100-80gb", tp=2)
    assert pm.kv_bytes_per_token == 4 * (128 + 32) * 2  # latent + rope key, replicated per TP rank
    m = model_spec(str(path))
    assert m.num_moe_layers == 3 and m.moe is not None and m.moe.num_shared_experts == 2


def test_bad_config_file(tmp_path: Path) -> None:
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        build_perf_model(str(bad), "h100-sxm")
    bad.write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    with pytest.raises(InputError, match="missing 'num_hidden_layers'"):
        build_perf_model(str(bad), "h100-sxm")
    with pytest.raises(InputError, match="not found"):
        build_perf_model(str(tmp_path / "nope.json"), "h100-sxm")


@pytest.mark.parametrize("dtype", ["bf16", "fp16", "fp8", "int8", "int4"])
def test_precisions_change_bytes(dtype: str) -> None:
    pm = build_perf_model("llama-3.1-8b", "h100-sxm", dtype=dtype)
    emb = 2 * 128_256 * 4_096 * 2  # embedding + LM head stay 16-bit
    per_weight = {"bf16": 2, "fp16": 2, "fp8": 1, "int8": 1, "int4": 0.5}[dtype]
    assert pm.weight_bytes_per_gpu == int(32 * 218_103_808 * per_weight + emb)
    assert pm.kv_bytes_per_token == (65_536 if dtype == "fp8" else 131_072)


def test_fp8_kv_with_bf16_weights_and_expert_parallel() -> None:
    from servesim.perf import PerfConfig

    pm = build_perf_model("llama-3.1-8b", "a100-80gb", config=PerfConfig(kv_cache_dtype="fp8"))
    assert pm.kv_bytes_per_token == 65_536
    tp_moe = build_perf_model("mixtral-8x7b", "h100-sxm", tp=4)
    ep_moe = build_perf_model("mixtral-8x7b", "h100-sxm", tp=4, config=PerfConfig(expert_parallel=True))
    assert tp_moe.step_breakdown([], [100] * 8).communication_s != ep_moe.step_breakdown([], [100] * 8).communication_s


def test_pipeline_parallel_splits_layers_and_adds_handoff() -> None:
    pp1 = build_perf_model("llama-3.1-70b", "h100-sxm", tp=4)
    pp2 = build_perf_model("llama-3.1-70b", "h100-sxm", tp=4, pp=2)
    assert pp2.weight_bytes_per_gpu < 0.55 * pp1.weight_bytes_per_gpu
    b1, b2 = pp1.step_breakdown([], [100]), pp2.step_breakdown([], [100])
    assert b2.communication_s > b1.communication_s  # one stage hand-off more


def test_max_model_len_from_config() -> None:
    assert build_perf_model("llama-3.1-8b", "h100-sxm").max_model_len == 131_072
    assert build_perf_model("opt-13b", "a100-80gb").max_model_len == 2_048


def test_scaleup_domain_is_the_hgx_board_unless_the_system_is_larger():
    domains = {name: gpu_spec(name).scaleup_domain_gpus for name in gpu_names()}
    assert domains["gb200"] == 72  # NVL72: one NVLink switch fabric over 72 GPUs
    assert {n: d for n, d in domains.items() if n != "gb200"} == {n: 8 for n in domains if n != "gb200"}
    assert isinstance(domains["gb200"], int)
