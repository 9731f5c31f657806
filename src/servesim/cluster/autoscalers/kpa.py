"""Knative Pod Autoscaler: concurrency averaged over a stable and a panic window.

Defaults from knative/serving `config/core/configmaps/autoscaler.yaml` (spec §6.1):
target 100 x 70 %, stable window 60 s, panic window 10 % of it, panic threshold 200 %,
max scale up rate 1000, max scale down rate 2, tick 2 s, scale-to-zero grace 30 s. In panic
the count never decreases; panic ends a stable window after the last panic trigger. At zero
ready pods the activator holds requests (the cluster queue) and the first one scales up.
"""

from __future__ import annotations

import math

from pydantic import Field

from servesim.cluster.autoscalers import register
from servesim.cluster.autoscalers.base import Autoscaler, AutoscalerParams, ceil_div, window
from servesim.sums import left_sum


class KPAParams(AutoscalerParams):
    container_concurrency_target_default: float = Field(100.0, gt=0)
    """Target in-flight requests per pod (container-concurrency-target-default)."""
    container_concurrency_target_percentage: float = Field(70.0, gt=0, le=100)
    """Share of the target actually aimed at (container-concurrency-target-percentage)."""
    stable_window_s: float = Field(60.0, ge=6, le=3600)
    """stable-window (6 s to 1 h)."""
    panic_window_percentage: float = Field(10.0, gt=0, le=100)
    """Panic window as a share of the stable window (panic-window-percentage)."""
    panic_threshold_percentage: float = Field(200.0, gt=100)
    """Enter panic when the panic-window demand reaches this share of ready pods."""
    max_scale_up_rate: float = Field(1000.0, gt=1)
    """At most ceil(rate x ready) pods (max-scale-up-rate)."""
    max_scale_down_rate: float = Field(2.0, gt=1)
    """At least floor(ready / rate) pods (max-scale-down-rate)."""
    scale_to_zero_grace_period_s: float = Field(30.0, ge=0)
    """Idle time beyond the stable window before the last pod goes (scale-to-zero-grace-period)."""


@register("kpa")
class KPA(Autoscaler):
    Params = KPAParams
    default_interval_s = 2.0  # tick-interval

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self._panic_since: float | None = None
        self._max_panic_pods = 0
        self._last_busy_s = 0.0

    def history_s(self, interval_s):
        return self.params.stable_window_s  # (the panic window is a share of it)

    def desired(self, now_s, samples, current):
        p: KPAParams = self.params
        target = p.container_concurrency_target_default * p.container_concurrency_target_percentage / 100
        panic_window_s = p.stable_window_s * p.panic_window_percentage / 100
        seen_s = samples[-1].time_s  # windows end at the newest metrics (they lag by the scrape delay)
        stable = _mean(window(samples, seen_s, p.stable_window_s))
        panic = _mean(window(samples, seen_s, panic_window_s))
        ready = samples[-1].num_ready
        d_stable, d_panic = ceil_div(stable, target), ceil_div(panic, target)
        if ready > 0:  # at zero the activator scales from zero, unclamped
            lo, hi = math.floor(ready / p.max_scale_down_rate), math.ceil(p.max_scale_up_rate * ready)
            d_stable, d_panic = min(max(d_stable, lo), hi), min(max(d_panic, lo), hi)
        if d_panic / max(1, ready) >= p.panic_threshold_percentage / 100:
            self._panic_since = now_s
        elif self._panic_since is not None and now_s - self._panic_since >= p.stable_window_s:
            self._panic_since, self._max_panic_pods = None, 0
        if self._panic_since is not None:
            want = max(d_stable, d_panic, self._max_panic_pods, current)  # never scale down in panic
            self._max_panic_pods = want
        else:
            want = d_stable
        if samples[-1].concurrency > 0:
            self._last_busy_s = now_s
        if want == 0 and now_s - self._last_busy_s < p.stable_window_s + p.scale_to_zero_grace_period_s:
            want = min(current, 1)  # keep the last pod through the grace period
        return want, panic


def _mean(samples) -> float:
    return left_sum(s.concurrency for s in samples) / len(samples)
