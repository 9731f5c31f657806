"""llm-d workload-variant autoscaler (WVA): the capacity (saturation) rule.

From the WVA capacity-scaling configuration (defaults: kvCacheThreshold 0.80,
queueLengthThreshold 5, kvSpareTrigger 0.10, queueSpareTrigger 3): a replica is saturated
when its KV usage or its queue reaches a threshold. Over the non-saturated replicas, the
average spare KV (threshold - usage) and spare queue (threshold - waiting) are computed; if
there is none, or either spare falls below its trigger, add one replica. No scale-up while a
replica is still starting (WVA blocks cascade scaling). Scale down by one only if the load
spread over one replica fewer would still leave both spares above their triggers
(worst-case simulation). The 60 s interval is our reading of WVA's reconcile period.
"""

from __future__ import annotations

from pydantic import Field

from servesim.cluster.autoscalers import register
from servesim.cluster.autoscalers.base import Autoscaler, AutoscalerParams
from servesim.sums import left_sum


class WVAParams(AutoscalerParams):
    kv_cache_threshold: float = Field(0.8, gt=0, le=1)
    """kvCacheThreshold: saturated at or above this KV usage."""
    queue_length_threshold: float = Field(5.0, gt=0)
    """queueLengthThreshold: saturated at or above this many waiting requests."""
    kv_spare_trigger: float = Field(0.1, ge=0)
    """kvSpareTrigger: scale up when the average spare KV falls below it."""
    queue_spare_trigger: float = Field(3.0, ge=0)
    """queueSpareTrigger: scale up when the average spare queue falls below it."""


@register("llm-d-wva")
class WVA(Autoscaler):
    Params = WVAParams
    default_interval_s = 60.0

    def desired(self, now_s, samples, current):
        p: WVAParams = self.params
        s = samples[-1]
        if not s.views:  # nothing reports metrics: a request waiting at zero replicas starts one
            return (max(current, 1) if s.num_queued else current), 0.0
        kv = [v.kv_usage for v in s.views]
        queue = [v.num_waiting + s.num_queued / max(s.num_ready, 1) for v in s.views]
        free = [(p.kv_cache_threshold - k, p.queue_length_threshold - q) for k, q in zip(kv, queue)
                if k < p.kv_cache_threshold and q < p.queue_length_threshold]
        spare_kv = left_sum(f[0] for f in free) / len(free) if free else 0.0
        spare_q = left_sum(f[1] for f in free) / len(free) if free else 0.0
        if not free or spare_kv < p.kv_spare_trigger or spare_q < p.queue_spare_trigger:
            return (current if s.num_starting else current + 1), spare_kv
        n = s.num_ready
        if n > 1 and s.num_starting == 0:
            kv_after, q_after = left_sum(kv) / (n - 1), left_sum(queue) / (n - 1)
            if (p.kv_cache_threshold - kv_after >= p.kv_spare_trigger
                    and p.queue_length_threshold - q_after >= p.queue_spare_trigger):
                return current - 1, spare_kv
        return current, spare_kv
