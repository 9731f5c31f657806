"""Pure parts of elastic clusters, with exact numbers: the cold-start model, power and
clock arithmetic, lifecycle intervals, and each autoscaler's rule on hand-made samples."""

from __future__ import annotations

import math

import pytest

from servesim.cluster.autoscalers import get_autoscaler
from servesim.cluster.autoscalers.base import Capacity, Sample
from servesim.cluster.coldstart import ColdStartConfig, cold_start_s, phase_times_s
from servesim.cluster.power import clock_at, clock_for_cap, gpu_power_w, power_at_clock_w, up_intervals
from servesim.cluster.view import ReplicaView
from servesim.perf.hardware import gpu_spec
from servesim.perf.build import at_clock

GB = 1e9
CAP = Capacity(prefill_tokens_per_s=10_000.0, decode_tokens_per_s=2_000.0, max_num_seqs=256, num_gpu_blocks=1000,
               block_size=16, cold_start_s=30.0)


def view(i=0, outstanding=0, running=0, waiting=0, kv_used=0, prefill=0, decode=0):
    return ReplicaView(i, "default", 0.0, outstanding, running, waiting, kv_used, 1000, prefill, decode)


def sample(t, views, arrivals=0, queued=0, starting=0, prompt=0, output=0, window=2.0):
    return Sample(t, tuple(views), starting, 0, queued, arrivals, prompt, output, window)


def scaler(name, **params):
    cls = get_autoscaler(name)
    return cls(cls.Params(**params), CAP, 0, 10)


# ---------------------------------------------------------------- cold start
def test_cold_start_is_the_sum_of_its_parts():
    cfg = ColdStartConfig()  # 16 GB of Llama-3.1-8B from a local NVMe array shared by 8 GPUs
    phases = phase_times_s(cfg, 16 * GB)
    assert phases["pending"] == pytest.approx(3.24)
    assert phases["loading"] == pytest.approx(16e9 / (29.4e9 / 8) + 0.3)
    assert phases["warming"] == pytest.approx(25.0)
    assert cold_start_s(cfg, 16 * GB) == pytest.approx(sum(phases.values()))


def test_storage_tiers_order_the_load_time():
    loads = [phase_times_s(ColdStartConfig(storage=s), 16 * GB)["loading"]
             for s in ("gpu", "host_memory", "local_ssd", "remote")]
    assert loads[0] == 0.0 and loads == sorted(loads)
    assert loads[3] == pytest.approx(16.0 + 0.3)  # 1 GB/s remote store
    slow = phase_times_s(ColdStartConfig(storage="local_ssd", load_format_factor=6.5), 16 * GB)["loading"]
    assert slow == pytest.approx((loads[2] - 0.3) * 6.5 + 0.3)  # SafeTensors-like loader


# ---------------------------------------------------------------- power
def test_power_constants_come_from_the_catalogue_or_tdp_shares():
    assert gpu_power_w(gpu_spec("h100-sxm")) == (75, 700, 380)
    assert gpu_power_w(gpu_spec("a100-80gb")) == (63, 400, 250)
    l4 = gpu_spec("l4")
    assert gpu_power_w(l4) == pytest.approx((l4.tdp_w * 75 / 700, l4.tdp_w, l4.tdp_w * 380 / 700))


def test_a_cap_maps_to_the_clock_whose_peak_power_meets_it():
    power = (75.0, 700.0, 380.0)
    f = clock_for_cap(power, 400.0, 2.5)
    assert power_at_clock_w(power, 700.0, f, 2.5) == pytest.approx(400.0)
    assert clock_for_cap(power, 800.0, 2.5) == 1.0


def test_a_lower_clock_slows_compute_in_proportion_and_memory_much_less():
    g = gpu_spec("h100-sxm")
    slow = at_clock(g, 0.5, 0.2)
    assert slow.peak_flops["bf16"] == g.peak_flops["bf16"] / 2
    assert slow.hbm_bw_bytes_s == pytest.approx(g.hbm_bw_bytes_s * 0.5 ** 0.2)
    assert at_clock(g, 1.0, 0.2) is g


def test_clock_log_and_up_intervals():
    assert list(clock_at([(10.0, 0.8), (20.0, 1.0)], [0.0, 10.0, 15.0, 25.0])) == [1.0, 0.8, 0.8, 1.0]
    life = [(0.0, "stopped"), (5.0, "pending"), (8.0, "ready"), (20.0, "draining"), (30.0, "stopped"),
            (40.0, "pending")]
    assert up_intervals(life, 50.0) == [(5.0, 30.0), (40.0, 50.0)]
    assert up_intervals([], 12.0) == [(0.0, 12.0)]


# ---------------------------------------------------------------- autoscaler rules
def test_hpa_tolerance_and_scale_down_stabilisation():
    hpa = scaler("hpa", target_value=10)
    s = sample(0, [view(outstanding=21), view(1, outstanding=21)])
    assert hpa.desired(0.0, [s], 2) == (5, 21.0)  # ceil(2 x 21 / 10)
    calm = sample(15, [view(outstanding=10.5), view(1, outstanding=10.5)])
    assert hpa.desired(15.0, [calm], 2)[0] == 2  # within 10 %
    idle = sample(30, [view(outstanding=1), view(1, outstanding=1)])
    assert hpa.desired(30.0, [idle], 2)[0] == 5  # the 300 s window remembers the 5
    assert hpa.desired(400.0, [idle], 2)[0] == 1
    # no scale-down window (behavior.scaleDown.stabilizationWindowSeconds: 0): down at once
    quick = scaler("hpa", target_value=10, scale_down_stabilization_window_s=0)
    assert quick.desired(0.0, [s], 2)[0] == 5
    assert quick.desired(15.0, [idle], 2)[0] == 1


def test_kpa_panics_on_a_burst_and_never_scales_down_in_panic():
    kpa = scaler("kpa", container_concurrency_target_default=10)  # target 7
    quiet = [sample(t, [view(outstanding=7)]) for t in range(2, 60, 2)]
    burst = quiet + [sample(60, [view(outstanding=70)])]
    want, _ = kpa.desired(60.0, burst, 1)
    # panic window (54, 60]: (7 + 7 + 70) / 3 = 28 -> 4 pods = 4 x ready >= 200 %: panic;
    # stable window: (29 x 7 + 70) / 30 = 9.1 -> 2; in panic the larger wins
    assert want == 4
    after = burst + [sample(62, [view(i, outstanding=1) for i in range(10)])]
    assert kpa.desired(62.0, after, 10)[0] == 10  # in panic: no scale-down


def test_apa_bands_and_rates():
    apa = scaler("aibrix-apa", target_value=10)
    assert apa.desired(0.0, [sample(0, [view(outstanding=50)])], 1)[0] == 2  # capped at 2 x 1
    apa2 = scaler("aibrix-apa", target_value=10)
    assert apa2.desired(0.0, [sample(0, [view(outstanding=10.5)])], 1)[0] == 1  # inside +-10 %


def test_llumnix_freeness_band():
    ll = scaler("llumnix")
    # 900 of 1000 blocks used by 20 requests: freeness 5 < 10 -> add one empty instance (1100 / 20 = 55)
    assert ll.desired(0.0, [sample(0, [view(running=20, kv_used=900)])], 1) == (2, 5.0)
    # 100 blocks used by 2 requests over two instances: freeness without one is (1900 - 1000) / 2 = 450 > 60
    two = [view(running=1, kv_used=50), view(1, running=1, kv_used=50)]
    assert ll.desired(0.0, [sample(0, two)], 2)[0] == 1


def test_wva_capacity_rule():
    wva = scaler("llm-d-wva")
    full = [view(kv_used=750, waiting=0)]  # spare KV 0.8 - 0.75 = 0.05 < 0.1
    assert wva.desired(0.0, [sample(0, full)], 1)[0] == 2
    assert wva.desired(0.0, [sample(0, full, starting=1)], 2)[0] == 2  # no cascade while one starts
    light = [view(kv_used=100), view(1, kv_used=100)]
    assert wva.desired(0.0, [sample(0, light)], 2)[0] == 1


def test_dynamo_throughput_mode_provisions_for_the_forecast():
    dyn = scaler("dynamo-planner")
    # 200 requests in 10 s, 1000 prompt + 100 output tokens each: 0.1 + 0.05 s of work each
    s = sample(10, [view()], arrivals=200, prompt=200_000, output=20_000, window=10.0)
    want, rate = dyn.desired(10.0, [s], 1)
    assert rate == 20.0 and want == math.ceil(20.0 * 0.15)


def test_forecast_uses_last_season_when_it_was_busier():
    fc = scaler("forecast", window_s=60, season_s=300, target_utilization=1.0)
    hist = [sample(t, [view()], arrivals=(100 if 330 < t <= 390 else 2), prompt=0, output=0, window=10)
            for t in range(10, 610, 10)]
    hist = [Sample(s.time_s, s.views, 0, 0, 0, s.arrivals, s.arrivals * 1000, s.arrivals * 100, 10) for s in hist]
    # at t = 600 the window one cold start (30 s) ahead, one season (300 s) back, is (330, 390]:
    # 600 requests in 60 s of 1000 + 100 tokens, 0.15 s of work each -> ceil(10 / 6.67) = 2
    want, rate = fc.desired(600.0, hist, 1)
    assert (want, rate) == (2, 10.0)
    assert scaler("forecast", window_s=60, target_utilization=1.0).desired(600.0, hist, 1) == (1, 12 / 60)
