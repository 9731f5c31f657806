"""AIBrix APA: scale by the ratio of a pod metric to its target, with fluctuation bands.

From aibrix `pkg/controller/podautoscaler/algorithm/apa.go` and its defaults in
`context.go` (spec §6.2): r = metric per pod / target; above 1 + up tolerance scale to
min(ceil(N r), ceil(MaxScaleUpRate N)); below 1 - down tolerance to max(ceil(N r),
floor(N / MaxScaleDownRate)); otherwise keep N. Tolerances 0.1, rates 2, scale-down cooldown
300 s, scale-up cooldown 0. The target (32 in-flight requests) and the 15 s sync period are
our choices.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from servesim.cluster.autoscalers import register
from servesim.cluster.autoscalers.base import Autoscaler, AutoscalerParams, per_replica


class APAParams(AutoscalerParams):
    metric: Literal["concurrency", "num_waiting", "kv_cache_usage"] = "concurrency"
    """Per-pod metric averaged over ready replicas."""
    target_value: float = Field(32.0, gt=0)
    """Target value of the metric per pod."""
    up_fluctuation_tolerance: float = Field(0.1, ge=0)
    """UpFluctuationTolerance."""
    down_fluctuation_tolerance: float = Field(0.1, ge=0, lt=1)
    """DownFluctuationTolerance."""
    max_scale_up_rate: float = Field(2.0, gt=1)
    """MaxScaleUpRate."""
    max_scale_down_rate: float = Field(2.0, gt=1)
    """MaxScaleDownRate."""
    scale_up_cooldown_window_s: float = Field(0.0, ge=0)
    """ScaleUpCooldownWindow: no scale-up this soon after the last change."""
    scale_down_cooldown_window_s: float = Field(300.0, ge=0)
    """ScaleDownCooldownWindow: no scale-down this soon after the last change."""


@register("aibrix-apa")
class APA(Autoscaler):
    Params = APAParams
    default_interval_s = 15.0

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self._last_change_s = -math.inf

    def desired(self, now_s, samples, current):
        p: APAParams = self.params
        s = samples[-1]
        value = per_replica(s, p.metric)
        n = max(s.num_ready, 1)
        r = value / p.target_value
        want = current
        if r > 1 + p.up_fluctuation_tolerance and now_s - self._last_change_s >= p.scale_up_cooldown_window_s:
            want = max(current, min(math.ceil(n * r), math.ceil(p.max_scale_up_rate * n)))
        elif r < 1 - p.down_fluctuation_tolerance and now_s - self._last_change_s >= p.scale_down_cooldown_window_s:
            want = min(current, max(math.ceil(n * r), math.floor(n / p.max_scale_down_rate)))
        if want != current:
            self._last_change_s = now_s
        return want, value
