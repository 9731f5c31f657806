"""StepTerms.token_s_fn: the per-token terms of a step (`linear_s + other_s + communication_s`,
what `PerfModel._token_s` memoises) as one function with the parts that do not depend on the
token count taken once: bit-identical to the three terms for every dense model of the catalogue."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from servesim.errors import InputError
from servesim.perf import PerfConfig, build_perf_model
from servesim.perf.engines import engine_names
from servesim.perf.models import model_names

TOKENS = [1, 2, 7, 64, 255, 256, 257, 1000, 4095, 8192, 65_536] + [int(x) for x in np.random.default_rng(0).integers(1, 20_000, 40)]


def _terms(perf, n: int) -> float:
    t = perf.terms
    return t.linear_s(n) + t.other_s(n) + t.communication_s(n)


def _built(model: str, gpu: str, tp: int, pp: int, config: PerfConfig):
    try:
        return build_perf_model(model, gpu, tp, config=config, pp=pp)
    except InputError:
        return None  # (a TP the model's heads do not split into, or too few layers for the PP)


@pytest.mark.parametrize("engine", engine_names())
def test_token_s_fn_equals_the_terms_for_every_model(engine):
    formed = 0
    for model in model_names():
        for gpu, tp, pp in (("h100-sxm", 1, 1), ("h100-sxm", 2, 1), ("a100-80gb", 8, 2), ("b200", 4, 1)):
            perf = _built(model, gpu, tp, pp, PerfConfig(engine=engine))
            if perf is None:
                continue
            f = perf.terms.token_s_fn()
            m = perf.terms.model
            if m.moe is not None or m.linear_attention is not None:
                assert f is None  # (the terms are called)
                continue
            formed += 1
            for n in TOKENS:
                assert f(n) == _terms(perf, n), (model, gpu, tp, pp, n)  # exact, not approximate
                assert perf._token_s(n) == _terms(perf, n)
    assert formed > 10  # (the dense models of the catalogue, on the GPUs above)


@pytest.mark.parametrize("overrides", [{"eta_compute_large_m": 0.9, "gemm_m_half_tokens": 700.0},
                                       {"smoothing_k": 1.0}, {"smoothing_k": 3.5, "layer_floor_s": 4e-6},
                                       {"custom_allreduce": 0.0, "ar_ring_bw_eff": 0.9}])
def test_token_s_fn_with_other_constants(overrides):
    # (a GEMM efficiency growing with the token count, other roofline blends and floors, the ring all-reduce)
    for gpu, tp, pp in (("h100-sxm", 1, 1), ("h100-sxm", 8, 1), ("h200", 2, 2)):
        perf = build_perf_model("llama-3.1-70b", gpu, tp, config=PerfConfig(engine="vllm", overrides=overrides), pp=pp)
        f = perf.terms.token_s_fn()
        assert f is not None
        for n in TOKENS:
            assert f(n) == _terms(perf, n)
    copy = pickle.loads(pickle.dumps(perf))  # (a perf model holding the form still pickles, as before it)
    assert copy._token_s(12_345) == perf._token_s(12_345) == _terms(perf, 12_345)
