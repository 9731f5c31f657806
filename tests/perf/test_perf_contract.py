"""The v1 contract the simulation core relies on: names, KV sizes, capacity, physics, fast-forward."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.config_docs import field_doc
from servesim.errors import InputError
from servesim.perf import PerfConfig, PerfModel, StepTime, build_perf_model


@pytest.fixture(scope="module")
def h100_8b() -> PerfModel:
    return build_perf_model("llama-3.1-8b", "h100-sxm", tp=1, dtype="bf16")


@pytest.mark.parametrize("model", ["llama-3.1-8b", "LLAMA-3.1-8B", "llama-3.1-70b", "Llama-3.1-70B"])
@pytest.mark.parametrize("gpu", ["a100-80gb", "H100-SXM"])
@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_required_names_build(model: str, gpu: str, tp: int) -> None:
    pm = build_perf_model(model, gpu, tp=tp, dtype="bf16")
    assert pm.model_name == model.lower() and pm.gpu_name == gpu.lower() and pm.tp == tp
    assert pm.step_time_s([(128, 0)], [512]) > 0


@pytest.mark.parametrize(
    ("model", "tp", "dtype", "pp", "expected"),
    [
        ("llama-3.1-8b", 1, "bf16", 1, 32 * 2 * 8 * 128 * 2),  # 131,072
        ("llama-3.1-8b", 2, "bf16", 1, 32 * 2 * 4 * 128 * 2),
        ("llama-3.1-8b", 1, "fp8", 1, 32 * 2 * 8 * 128 * 1),  # fp8 weights => fp8 KV by default
        ("llama-2-7b", 2, "bf16", 1, 32 * 2 * 16 * 128 * 2),  # MHA split over 2 GPUs
        ("llama-3.1-70b", 4, "bf16", 1, 80 * 2 * 2 * 128 * 2),
        ("llama-3.1-70b", 8, "bf16", 1, 80 * 2 * 1 * 128 * 2),  # 40,960
        ("llama-3.1-70b", 16, "bf16", 1, 80 * 2 * 1 * 128 * 2),  # TP > KV heads: one head replicated per GPU
        ("qwen3-30b-a3b", 8, "bf16", 1, 48 * 2 * 1 * 128 * 2),  # 4 KV heads over 8 GPUs: replicated
        ("deepseek-v3", 1, "bf16", 1, 61 * (512 + 64) * 2),  # MLA latent: 70,272
        ("deepseek-v3", 8, "bf16", 1, 61 * (512 + 64) * 2),  # MLA latent replicated on every TP rank
        ("llama-3.1-70b", 4, "bf16", 2, 40 * 2 * 2 * 128 * 2),  # PP: only the stage's layers
        ("qwen3-30b-a3b", 1, "bf16", 1, 48 * 2 * 4 * 128 * 2),  # 98,304
    ],
)
def test_kv_bytes_per_token(model: str, tp: int, dtype: str, pp: int, expected: int) -> None:
    assert build_perf_model(model, "h100-sxm", tp=tp, dtype=dtype, pp=pp).kv_bytes_per_token == expected


def test_weight_bytes_split_by_tp() -> None:
    # Llama-3.1-8B without norm weights: 32 layers x 218,103,808 + 2 x 128,256 x 4,096 (embedding + LM head).
    pm1 = build_perf_model("llama-3.1-8b", "h100-sxm", tp=1)
    assert pm1.weight_bytes_per_gpu == (32 * 218_103_808 + 2 * 128_256 * 4_096) * 2 == 16_059_990_016
    pm2 = build_perf_model("llama-3.1-8b", "h100-sxm", tp=2)
    assert pm2.weight_bytes_per_gpu == pm1.weight_bytes_per_gpu // 2


def test_kv_capacity_llama8b_h100_util_09(h100_8b: PerfModel) -> None:
    hbm = 85_520_809_984  # 81,559 MiB as reported by the driver
    weights = 16_059_990_016
    activations = 8192 * (4 * 4096 + 3 * 14336) * 2 + 256 * 128_256 * 4  # 1,104,412,672
    misc = 1 << 30
    expected = int((0.9 * hbm - weights - activations - misc) // (16 * 131_072))
    assert expected == 28_004  # ~448k tokens
    assert h100_8b.num_gpu_blocks(16, 0.9, 8192) == expected


def test_capacity_bad_input(h100_8b: PerfModel) -> None:
    with pytest.raises(InputError, match="gpu_memory_utilization"):
        h100_8b.num_gpu_blocks(16, 1.5, 8192)
    with pytest.raises(InputError, match="block_size"):
        h100_8b.num_gpu_blocks(0, 0.9, 8192)


def test_batch1_decode_is_memory_bound_plus_overhead(h100_8b: PerfModel) -> None:
    # A decode step streams every weight except the embedding table (only one row is looked up):
    # 16.06 GB - 1.05 GB = 15.01 GB; / 3.35 TB/s = 4.48 ms at peak; / eta_memory (0.85 shipped) = 5.27 ms;
    # + 33 launch floors (32 layers + LM head, 10 us each for vLLM) + small KV/element-wise traffic;
    # + vLLM's CPU time per step (1.5 ms + 15 us per sequence), which does not overlap the GPU.
    c = h100_8b.constants
    streamed_bytes = 16_059_990_016 - 128_256 * 4_096 * 2
    weights_s = streamed_bytes / (c.eta_memory * 3.35e12)
    floors_s = 33 * c.layer_floor_s
    b = h100_8b.step_breakdown([], [1000])
    assert b.regime == "memory"
    assert b.overhead_s == pytest.approx(c.step_overhead_s + c.seq_overhead_s)
    assert weights_s + floors_s < b.gpu_s < weights_s * 1.03 + floors_s
    assert b.total_s == pytest.approx(b.gpu_s + b.overhead_s, rel=1e-12)
    assert 6.5e-3 < b.total_s < 8.0e-3
    ideal = build_perf_model("llama-3.1-8b", "h100-sxm", config=PerfConfig(engine="ideal"))
    assert weights_s < ideal.step_time_s([], [1000]) < weights_s * 1.03


def test_ttft_of_lone_request_is_one_prefill_step(h100_8b: PerfModel) -> None:
    t = h100_8b.step_time_s([(2048, 0)], [])
    assert t == h100_8b.step_breakdown([(2048, 0)], []).total_s
    assert 0.035 < t < 0.07  # ~29 TFLOP of GEMMs at 70 % of 989 TFLOP/s plus attention


def test_step_time_increases_with_batch_and_context(h100_8b: PerfModel) -> None:
    by_batch = [h100_8b.step_time_s([], [1024] * b) for b in (1, 8, 64, 256)]
    assert by_batch == sorted(by_batch) and len(set(by_batch)) == 4
    by_ctx = [h100_8b.step_time_s([], [c] * 32) for c in (128, 1024, 8192, 32768)]
    assert by_ctx == sorted(by_ctx) and len(set(by_ctx)) == 4
    by_prompt = [h100_8b.step_time_s([(p, 0)], []) for p in (16, 256, 4096)]
    assert by_prompt == sorted(by_prompt)
    assert h100_8b.step_time_s([(512, 1024)], []) > h100_8b.step_time_s([(512, 0)], [])


def test_tp_splits_weights_and_adds_allreduce() -> None:
    pm1 = build_perf_model("llama-3.1-70b", "h100-sxm", tp=1)
    pm4 = build_perf_model("llama-3.1-70b", "h100-sxm", tp=4)
    assert pm4.weight_bytes_per_gpu < pm1.weight_bytes_per_gpu / 3.9
    assert pm1.step_breakdown([], [512]).communication_s == 0.0
    b4 = pm4.step_breakdown([], [512])
    assert b4.communication_s > 80 * 2 * 10e-6  # 2 all-reduces per layer, each >= its launch cost
    assert pm4.step_time_s([], [512]) < pm1.step_time_s([], [512])


def test_empty_step_and_breakdown_total(h100_8b: PerfModel) -> None:
    assert h100_8b.step_time_s([], []) == 0.0
    b = h100_8b.step_breakdown([(300, 100)], [50, 60])
    assert isinstance(b, StepTime) and b.total_s == h100_8b.step_time_s([(300, 100)], [50, 60])


@pytest.mark.parametrize(
    ("model", "gpu", "tp", "dtype", "engine"),
    [
        ("llama-3.1-8b", "h100-sxm", 1, "bf16", "vllm"),
        ("llama-3.1-70b", "a100-80gb", 4, "bf16", "trtllm"),
        ("mistral-7b", "l40s", 1, "fp8", "sglang"),  # sliding window + overlapped CPU
        ("deepseek-v3", "h200", 8, "fp8", "sglang"),  # MLA + MoE
        ("mixtral-8x7b", "a100-80gb", 2, "int4", "ideal"),
    ],
)
def test_decode_step_times_bit_identical(model: str, gpu: str, tp: int, dtype: str, engine: str) -> None:
    pm = build_perf_model(model, gpu, tp=tp, dtype=dtype, config=PerfConfig(engine=engine))
    rng = np.random.default_rng(1234)
    for _ in range(20):
        n = int(rng.integers(1, 300))
        k = int(rng.integers(1, 60))
        ctxs = rng.integers(0, 9000, size=n)
        fast = pm.decode_step_times_s(ctxs, k)
        slow = np.array([pm.step_time_s([], list(ctxs + j)) for j in range(k)])
        assert fast.dtype == np.float64 and fast.shape == (k,)
        assert np.array_equal(fast, slow)  # exact equality, not approx


def test_decode_step_times_edge_cases(h100_8b: PerfModel) -> None:
    assert h100_8b.decode_step_times_s(np.array([], dtype=np.int64), 3).tolist() == [0.0, 0.0, 0.0]
    assert h100_8b.decode_step_times_s(np.array([5]), 0).shape == (0,)
    python_ints = [h100_8b.step_time_s([], [7 + j, 9 + j]) for j in range(4)]
    assert h100_8b.decode_step_times_s(np.array([7, 9]), 4).tolist() == python_ints


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": "llama-9b", "gpu": "h100-sxm"}, "unknown model 'llama-9b'; allowed: llama-2-7b"),
        ({"model": "llama-3.1-8b", "gpu": "h800"}, "unknown gpu 'h800'; allowed: a100-40gb, a100-80gb"),
        ({"model": "llama-3.1-8b", "gpu": "h100-sxm", "tp": 3}, "allowed tp: 1, 2, 4, 8"),
        ({"model": "llama-3.1-8b", "gpu": "h100-sxm", "dtype": "fp3"}, "unknown dtype 'fp3'; allowed: bf16"),
        ({"model": "llama-3.1-8b", "gpu": "h100-sxm", "dtype": "fp4"}, "gpu h100-sxm has no fp4 tensor cores; allowed dtypes: bf16, fp16, fp8, int8, int4"),
        ({"model": "llama-3.1-8b", "gpu": "a100-80gb", "dtype": "fp8"}, "no fp8 tensor cores; allowed dtypes: bf16"),
        ({"model": "llama-3.1-8b", "gpu": "h100-sxm", "pp": 0}, "pp must be an integer from 1 to 32"),
        ({"model": "llama-3.1-8b", "gpu": "h100-sxm", "config": PerfConfig(engine="foo")}, "unknown engine 'foo'; allowed: vllm"),
        ({"model": "llama-3.1-8b", "gpu": "h100-sxm", "config": PerfConfig(kv_cache_dtype="int2")}, "unknown kv_cache_dtype"),
        ({"model": "llama-3.1-8b", "gpu": "h100-sxm", "config": PerfConfig(overrides={"eta": 1.0})}, "unknown constant 'eta'"),
        ({"model": "llama-3.1-8b", "gpu": "h100-sxm", "config": PerfConfig(calibration="/nonexistent.yaml")}, "not found"),
    ],
)
def test_bad_input_names_allowed_values(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(".", r"\.")) as info:
        build_perf_model(**kwargs)
    assert "\n" not in str(info.value)


def test_perf_config_fields_documented() -> None:
    for name, info in PerfConfig.model_fields.items():
        assert field_doc(PerfConfig, name), name
    with pytest.raises(ValueError):
        PerfConfig(unknown=1)  # type: ignore[call-arg]
    assert PerfConfig().engine == "vllm" and PerfConfig().calibration is None


def test_swap_time_uses_pcie(h100_8b: PerfModel) -> None:
    # 1000 tokens x 128 KiB over PCIe Gen5 (64 GB/s) at 80 % = 2.56 ms
    assert h100_8b.swap_time_s(1000) == pytest.approx(1000 * 131_072 / (0.8 * 64e9))


def test_load_and_transfer_times(h100_8b: PerfModel) -> None:
    c = h100_8b.constants
    assert h100_8b.model_load_time_s() == pytest.approx(16_059_990_016 / (c.pcie_eff * 64e9))
    assert h100_8b.kv_transfer_time_s(1000, link_bw_bytes_s=100e9) == pytest.approx(2.6e-6 + 1000 * 131_072 / 100e9)
    assert h100_8b.gpu_spec.tdp_w == 700 and h100_8b.model_spec.num_layers == 32


def test_token_terms_are_built_once_per_terms_and_not_carried_by_replace() -> None:
    """`StepTerms.token_terms` is memoised (`linear_s`, `other_s` and `PerfModel._token_s` read it at
    every new token count: a sessions turn's): the same object each call, and a `replace`d terms
    with another TP (attention data parallelism's MoE terms) builds its own from its own blocks."""
    from dataclasses import replace

    terms = build_perf_model("qwen3-30b-a3b", "h100-sxm", tp=2, dtype="bf16").terms
    first = terms.token_terms()
    assert terms.token_terms() is first and terms.linear_s(100) == first.linear_s(100)
    wider = replace(terms, tp=4)
    assert wider == replace(terms, tp=4) and wider.token_terms() is not first
    assert wider.blocks() != terms.blocks() and wider.linear_s(100) != terms.linear_s(100)
