"""TokenTerms: a step's per-token terms `linear_s` and `other_s` (which `PerfModel._token_s`
memoises with `communication_s`), the only code that evaluates them, with what does not depend
on the token count taken once. Checked bit for bit against the formulas of
shared/specs/perf-model.md §4 written plainly below (a smoothed roofline per GEMM block from its
FLOPs and bytes, the layers' floor, the element-wise bytes per token), for every model of the
catalogue, dense, MoE and hybrid, with every engine profile."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from servesim.errors import InputError
from servesim.perf import PerfConfig, build_perf_model, roofline
from servesim.perf.engines import engine_names
from servesim.perf.hardware import ACTIVATION_BYTES
from servesim.perf.models import kv_elements_per_token_layer, model_names

TOKENS = [1, 2, 7, 64, 255, 256, 257, 1000, 4095, 8192, 65_536] + [int(x) for x in np.random.default_rng(0).integers(1, 20_000, 40)]


def _linear_s(t, n: int, moe: bool | None = None) -> float:
    """The GEMM blocks' rooflines summed in their order, each priced from scratch."""
    c, g = t.c, t.gpu
    total = 0.0
    for b in t.blocks():
        if moe is not None and b.moe != moe:
            continue
        elems, eta = b.weight_elems, t.eta_compute_at(n)
        if b.moe:
            elems += t.expert_weights_read(n)
            eta = c.eta_moe_compute or eta
        block_s = roofline.smooth_roofline_s(b.flops_per_token * n, elems * t.dtype.weight_bytes + b.act_bytes_per_token * n,
                                             g.peak_flops[t.dtype.compute], g.hbm_bw_bytes_s, eta, c.eta_memory, c.smoothing_k)
        if b.moe:
            block_s = block_s + t.moe_copy_s_per_token() * n
        total += b.count * block_s
    return total if moe else total + t.model.num_layers * c.layer_floor_s


def _other_s(t, n: int) -> float:
    m, den = t.model, t.c.eta_memory * t.gpu.hbm_bw_bytes_s
    elem_bytes = (10.0 * m.hidden_size + 3.0 * t.ffn_width()) * ACTIVATION_BYTES
    kv_write = kv_elements_per_token_layer(m, t.tp) * t.kv_bytes
    if m.linear_attention is not None:  # only the attention layers write KV
        return n * (m.num_layers * elem_bytes + m.num_attention_layers * kv_write) / den
    return m.num_layers * n * (elem_bytes + kv_write) / den


def _check(perf, n: int) -> None:
    t, f = perf.terms, perf.terms.token_terms()
    for moe in (None, False, True):
        assert f.linear_s(n, moe) == t.linear_s(n, moe) == _linear_s(t, n, moe), (perf.model_name, n, moe)  # exact
    assert f.other_s(n) == t.other_s(n) == _other_s(t, n), (perf.model_name, n)
    assert perf._token_s(n) == _linear_s(t, n) + _other_s(t, n) + t.communication_s(n), (perf.model_name, n)


def _built(model: str, gpu: str, tp: int, pp: int, dtype: str, config: PerfConfig):
    try:
        return build_perf_model(model, gpu, tp, dtype=dtype, config=config, pp=pp)
    except InputError:
        return None  # (a TP the model's heads do not split into, too few layers for the PP, a dtype it lacks)


@pytest.mark.parametrize("engine", engine_names())
def test_token_terms_equal_the_formulas_for_every_model(engine):
    kinds = set()
    for model in model_names():
        for gpu, tp, pp, dtype in (("h100-sxm", 1, 1, "bf16"), ("a100-80gb", 8, 2, "bf16"), ("b200", 4, 1, "fp8")):
            perf = _built(model, gpu, tp, pp, dtype, PerfConfig(engine=engine))
            if perf is None:
                continue
            m = perf.terms.model
            kinds |= {"moe"} if m.moe is not None else {"dense"}
            kinds |= {"hybrid"} if m.linear_attention is not None else set()
            for n in TOKENS[::3]:
                _check(perf, n)
    assert kinds == {"dense", "moe", "hybrid"}  # (the catalogue has each kind, and each was checked)


@pytest.mark.parametrize("overrides", [{"eta_compute_large_m": 0.9, "gemm_m_half_tokens": 700.0},
                                       {"smoothing_k": 1.0}, {"smoothing_k": 3.5, "layer_floor_s": 4e-6},
                                       {"custom_allreduce": 0.0, "ar_ring_bw_eff": 0.9},
                                       {"eta_moe_compute": 0.3, "moe_copy_bytes": 4.0, "moe_imbalance": 1.2}])
def test_token_terms_with_other_constants(overrides):
    # (a GEMM efficiency growing with the token count, other roofline blends and floors, the ring
    # all-reduce, the MoE grouped GEMM's own efficiency and its finalize copy; all-TP and expert parallel)
    for model, gpu, tp, pp, ep in (("llama-3.1-70b", "h100-sxm", 1, 1, False), ("llama-3.1-70b", "h100-sxm", 8, 1, False),
                                   ("llama-3.1-70b", "h200", 2, 2, False), ("qwen3-30b-a3b", "h100-sxm", 4, 1, False),
                                   ("qwen3-30b-a3b", "h100-sxm", 4, 1, True)):
        config = PerfConfig(engine="vllm", overrides=overrides, expert_parallel=ep)
        perf = build_perf_model(model, gpu, tp, config=config, pp=pp)
        for n in TOKENS:
            _check(perf, n)
    copy = pickle.loads(pickle.dumps(perf))  # (a perf model holding its terms still pickles)
    assert copy._token_s(12_345) == perf._token_s(12_345) == copy.terms.linear_s(12_345) + copy.terms.other_s(12_345) \
        + copy.terms.communication_s(12_345)
