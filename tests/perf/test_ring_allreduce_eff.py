"""ar_ring_bw_eff: the ring (NCCL) all-reduce's own bandwidth share on large messages (off by default)."""

from __future__ import annotations

import pytest

from servesim.errors import InputError
from servesim.perf import build_perf_model, roofline
from servesim.perf.config import PerfConfig
from servesim.validation.silicon import serving_calibration_path

MB = 1 << 20


def _model(**overrides):
    return build_perf_model("llama-3.1-70b", "h200", 8, "fp8", PerfConfig(overrides=overrides))


def test_ring_bandwidth_alone_sets_the_ring_path():
    # 8 GPUs, 100 MB over 450 GB/s links: the ring moves 2 * 7 / 8 of the message per GPU.
    args = (100 * MB, 8, 450e9, 2e-6, 10e-6)
    ring_at = lambda eff: 10e-6 + 14 * 2e-6 + 1.75 * 100 * MB / (eff * 450e9)  # noqa: E731
    assert roofline.allreduce_s(*args, 0.6) == pytest.approx(ring_at(0.6))
    assert roofline.allreduce_s(*args, 0.6, ring_bw_eff=1.0) == pytest.approx(ring_at(1.0))
    # 0 (off) is the shared share, bit for bit.
    assert roofline.allreduce_s(*args, 0.6, one_shot=True, ring_bw_eff=0.0) == roofline.allreduce_s(*args, 0.6, one_shot=True)


def test_one_shot_path_keeps_ar_bw_eff():
    # A decode-sized message (64 tokens x 8,192 x 2 bytes) takes the one-shot path, which ar_ring_bw_eff leaves alone.
    msg, n, bw, lat, launch = 64 * 8192 * 2, 8, 450e9, 2e-6, 3e-6
    one_shot = launch + lat + 7 * msg / (0.6 * bw)
    assert roofline.allreduce_s(msg, n, bw, lat, launch, 0.6, one_shot=True) == pytest.approx(one_shot)
    assert roofline.allreduce_s(msg, n, bw, lat, launch, 0.6, one_shot=True, ring_bw_eff=1.0) == pytest.approx(one_shot)


def test_off_by_default_and_prefill_all_reduces_speed_up():
    plain = _model(ar_bw_eff=0.6, custom_allreduce=1.0)
    assert plain.constants.ar_ring_bw_eff == 0.0
    ring = _model(ar_bw_eff=0.6, custom_allreduce=1.0, ar_ring_bw_eff=1.0)
    # An 8,192-token prefill all-reduces 8,192 x 8,192 x 2 bytes = 128 MiB twice in each of the 80 layers,
    # over the ring at the ring's share; its bandwidth term shrinks by 0.6 / 1.0 (the hops' latency stays).
    g, c = ring.terms.gpu, ring.constants
    one = roofline.allreduce_s(128 * MB, 8, g.scaleup_bw_bytes_s, g.scaleup_latency_s, c.ar_launch_s, 0.6, one_shot=True,
                               ring_bw_eff=1.0)
    assert ring.terms.communication_s(8192) == pytest.approx(2 * 80 * one)
    ratio = ring.terms.communication_s(8192) / plain.terms.communication_s(8192)
    assert 0.6 < ratio < 0.63
    # A decode step of 8 sequences stays on the one-shot path: the same time, bit for bit.
    assert ring.step_time_s([], [2048] * 8) == plain.step_time_s([], [2048] * 8)


def test_shipped_serving_entries():
    cal = serving_calibration_path()
    c = lambda gpu, engine: build_perf_model("deepseek-r1", gpu, 8, "fp8", PerfConfig(engine=engine, calibration=cal)).constants  # noqa: E731
    assert c("h200", "trtllm").ar_ring_bw_eff == 1.0
    assert c("b300", "vllm").ar_ring_bw_eff == 0.9 and c("b300", "vllm").eta_attn_compute == 0.8
    assert c("b300", "sglang").ar_ring_bw_eff == 0.9 and c("b300", "sglang").eta_attn_compute == 0.8
    # The other groups keep the shared share on the ring path.
    assert c("h200", "sglang").ar_ring_bw_eff == 0.0 and c("b200", "trtllm").ar_ring_bw_eff == 0.0


@pytest.mark.parametrize("bad", [1.2, -0.1])
def test_out_of_range_values_are_refused(bad):
    with pytest.raises(InputError, match="constant 'ar_ring_bw_eff' must be"):
        _model(ar_ring_bw_eff=bad)
