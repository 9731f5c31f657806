"""Mixed MoE TP x EP: the split's resolution and the communication term (exact)."""

from __future__ import annotations

import pytest

from servesim.errors import InputError
from servesim.perf import PerfConfig, build_perf_model, roofline
from servesim.perf.hardware import ACTIVATION_BYTES
from servesim.perf.terms import moe_communication_s, moe_split

BATCHES = [([], [100] * 8), ([(512, 0)], [300] * 3), ([(4096, 1024), (17, 0)], [])]


def _step_times(config: PerfConfig, tp: int = 16, model: str = "deepseek-v3", gpu: str = "b200") -> list[float]:
    pm = build_perf_model(model, gpu, tp=tp, dtype="fp8", config=config)
    return [pm.step_time_s(p, d) for p, d in BATCHES]


def test_split_resolution() -> None:
    assert moe_split(8, False, None, None) == (8, 1)
    assert moe_split(8, True, None, None) == (1, 8)
    assert moe_split(16, False, 4, 4) == (4, 4)
    assert moe_split(8, False, None, 4) == (2, 4)
    assert moe_split(8, False, 2, None) == (2, 4)
    assert moe_split(8, True, 1, 8) == (1, 8)


@pytest.mark.parametrize("tp, expert_parallel, moe_tp, moe_ep, message", [
    (16, False, 4, 2, "moe_tp_size x moe_ep_size must equal tp 16, got 4 x 2; allowed sizes: 1, 2, 4, 8, 16"),
    (8, False, 3, None, "moe_tp_size x moe_ep_size must equal tp 8, got 3 x unset; allowed sizes: 1, 2, 4, 8"),
    (8, True, 2, 4, "expert_parallel: true means moe_ep_size = tp (8), got moe_ep_size 4"),
])
def test_split_errors_name_the_allowed_values(tp, expert_parallel, moe_tp, moe_ep, message) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        moe_split(tp, expert_parallel, moe_tp, moe_ep)


def test_one_by_n_is_all_ep_bit_for_bit() -> None:
    assert _step_times(PerfConfig(moe_tp_size=1, moe_ep_size=16)) == _step_times(PerfConfig(expert_parallel=True))


def test_n_by_one_is_all_tp_bit_for_bit() -> None:
    assert _step_times(PerfConfig(moe_tp_size=16, moe_ep_size=1)) == _step_times(PerfConfig())


def test_mixed_term_is_alltoall_over_ep_plus_allreduce_over_moe_tp() -> None:
    pm = build_perf_model("deepseek-v3", "b200", tp=16, dtype="fp8", config=PerfConfig(moe_tp_size=4, moe_ep_size=4))
    c, g, m = pm.constants, pm.gpu_spec, pm.model_spec
    tokens = 64
    msg = tokens * m.hidden_size * ACTIVATION_BYTES
    a2a = roofline.alltoall_s(msg * 8, 4, g.scaleup_bw_bytes_s, g.scaleup_latency_s, c.ar_launch_s, c.ar_bw_eff)
    ar4 = roofline.allreduce_s(msg, 4, g.scaleup_bw_bytes_s, g.scaleup_latency_s, c.ar_launch_s, c.ar_bw_eff,
                               one_shot=c.custom_allreduce >= 0.5)
    per_layer = moe_communication_s(msg, 8, 4, 4, g.scaleup_bw_bytes_s, g.scaleup_latency_s, c)
    assert per_layer == 2.0 * a2a + ar4 and a2a > 0 and ar4 > 0
    ar16 = roofline.allreduce_s(msg, 16, g.scaleup_bw_bytes_s, g.scaleup_latency_s, c.ar_launch_s, c.ar_bw_eff,
                                one_shot=c.custom_allreduce >= 0.5)
    expected = m.num_layers * ar16 + (m.num_dense_ffn_layers * ar16 + m.num_moe_layers * per_layer)
    assert pm.terms.communication_s(tokens) == expected
    # weights and KV do not depend on how the experts are split; the expert reads do (the busiest of
    # more EP ranks draws further above the mean: tests/perf/test_expert_imbalance.py)
    ep = build_perf_model("deepseek-v3", "b200", tp=16, dtype="fp8", config=PerfConfig(expert_parallel=True))
    assert (pm.weight_bytes_per_gpu, pm.kv_bytes_per_token) == (ep.weight_bytes_per_gpu, ep.kv_bytes_per_token)
    assert pm.terms.linear_s(tokens) < ep.terms.linear_s(tokens)


def test_bad_split_in_a_build_is_one_input_error() -> None:
    with pytest.raises(InputError, match="must equal tp 4, got 2 x 4"):
        build_perf_model("mixtral-8x7b", "h100-sxm", tp=4, config=PerfConfig(moe_tp_size=2, moe_ep_size=4))


@pytest.mark.parametrize("split", [dict(expert_parallel=True), dict(moe_tp_size=4, moe_ep_size=4), dict(moe_tp_size=2, moe_ep_size=8)])
def test_without_all_to_all_expert_parallelism_communicates_as_all_tp(split) -> None:
    # vLLM (all-to-all kernels only when dp > 1), SGLang's default backend and TensorRT-LLM without
    # attention DP: every rank holds all tokens, the MoE output is all-reduced over the TP group
    def comm(config: PerfConfig) -> list[float]:
        pm = build_perf_model("deepseek-v3", "b200", tp=16, dtype="fp8", config=config)
        return [pm.terms.communication_s(n) for n in (8, 515, 4113)]

    assert comm(PerfConfig(moe_a2a_backend="none", **split)) == comm(PerfConfig())
    assert comm(PerfConfig(moe_a2a_backend="deepep", **split)) != comm(PerfConfig())
    # (the expert reads still wait for the busiest EP rank, with or without the all-to-all)
    none = build_perf_model("deepseek-v3", "b200", tp=16, dtype="fp8", config=PerfConfig(moe_a2a_backend="none", **split))
    deepep = build_perf_model("deepseek-v3", "b200", tp=16, dtype="fp8", config=PerfConfig(moe_a2a_backend="deepep", **split))
    assert none.terms.linear_s(8) == deepep.terms.linear_s(8)
