"""Kubernetes Horizontal Pod Autoscaler (autoscaling/v2) on a per-pod LLM metric.

desired = ceil(ready x metric / target), skipped when |metric / target - 1| <= tolerance
(kube-controller-manager `--horizontal-pod-autoscaler-tolerance` 0.1). The behaviour block's
stabilisation windows pick the highest recommendation of the last 300 s to scale down and
the lowest of the last 0 s to scale up (Kubernetes defaults); sync period 15 s. HPA has no
default target: ours (32 in-flight requests per replica) is a choice, as is the metric.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from servesim.cluster.autoscalers import register
from servesim.cluster.autoscalers.base import Autoscaler, AutoscalerParams, ceil_div, per_replica


class HPAParams(AutoscalerParams):
    metric: Literal["concurrency", "num_waiting", "kv_cache_usage"] = "concurrency"
    """Per-pod metric averaged over ready replicas."""
    target_value: float = Field(32.0, gt=0)
    """Target average value of the metric per replica (kv_cache_usage: 0-1)."""
    tolerance: float = Field(0.1, ge=0)
    """No change while the usage ratio is within 1 +- tolerance (Kubernetes default 0.1)."""
    scale_up_stabilization_window_s: float = Field(0.0, ge=0)
    """behavior.scaleUp.stabilizationWindowSeconds (default 0)."""
    scale_down_stabilization_window_s: float = Field(300.0, ge=0)
    """behavior.scaleDown.stabilizationWindowSeconds (default 300)."""


@register("hpa")
class HPA(Autoscaler):
    Params = HPAParams
    default_interval_s = 15.0  # --horizontal-pod-autoscaler-sync-period

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self._recs: list[tuple[float, int]] = []  # (time, raw recommendation)

    def desired(self, now_s, samples, current):
        p: HPAParams = self.params
        s = samples[-1]
        value = per_replica(s, p.metric)
        ratio = value / p.target_value
        if s.num_ready == 0:
            rec = max(current, 1) if s.num_queued else current
        elif abs(ratio - 1) <= p.tolerance:
            rec = current
        else:
            rec = ceil_div(s.num_ready * value, p.target_value)
        self._recs.append((now_s, rec))
        keep = max(p.scale_up_stabilization_window_s, p.scale_down_stabilization_window_s)
        self._recs = [(t, r) for t, r in self._recs if t > now_s - keep] or [(now_s, rec)]
        # each window holds this tick's recommendation, also when it is 0 s long (Kubernetes starts
        # from the current recommendation and goes over the stored ones inside the window)
        down_from, up_from = now_s - p.scale_down_stabilization_window_s, now_s - p.scale_up_stabilization_window_s
        if rec < current:  # scale down to the highest recommendation of the window
            return max((r for t, r in self._recs if t > down_from), default=rec), value
        if rec > current:  # scale up to the lowest recommendation of its window
            return min((r for t, r in self._recs if t > up_from), default=rec), value
        return rec, value
