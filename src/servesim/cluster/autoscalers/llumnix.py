"""Llumnix: keep the pool's average freeness inside a band (spec §4.2, §4.6).

Freeness = (free KV blocks - blocks the waiting requests need) / requests, i.e. roughly how
many more decode steps the batch can run before memory runs out; computed over the sum of
all instances (Llumnix's `avg_load` policy). Scale up while the freeness, counting k added
empty instances, is below `scale_up_threshold` (10); scale down by one when it stays above
`scale_down_threshold` (60) even without the last instance. Checked every 10 s
(`scaling_interval`). Requests held at the cluster count as waiting.
"""

from __future__ import annotations

import math

from pydantic import Field

from servesim.cluster.autoscalers import register
from servesim.cluster.autoscalers.base import Autoscaler, AutoscalerParams


class LlumnixParams(AutoscalerParams):
    scale_up_threshold: float = Field(10.0)
    """Scale up below this average freeness (blocks per request)."""
    scale_down_threshold: float = Field(60.0)
    """Scale down above this average freeness."""


@register("llumnix")
class Llumnix(Autoscaler):
    Params = LlumnixParams
    default_interval_s = 10.0  # scaling_interval

    def desired(self, now_s, samples, current):
        p: LlumnixParams = self.params
        s = samples[-1]
        cap = self.capacity
        free = sum(v.num_gpu_blocks - v.kv_used_blocks for v in s.views)
        need = sum(math.ceil(v.outstanding_prefill_tokens / cap.block_size) for v in s.views)
        n = sum(v.num_running + v.num_waiting for v in s.views) + s.num_queued
        need += s.num_queued  # at least a block each; their prompts are not known to the pool yet
        avail = free - need
        freeness = avail / n if n else math.inf
        pool = s.num_ready + s.num_starting  # starting instances count as empty ones
        avail += s.num_starting * cap.num_gpu_blocks
        k = 0
        while n and (avail + k * cap.num_gpu_blocks) / n < p.scale_up_threshold and pool + k < self.max_replicas:
            k += 1
        if k:
            return pool + k, freeness
        if pool > 0 and (n == 0 or (avail - cap.num_gpu_blocks) / n > p.scale_down_threshold):
            return pool - 1, freeness
        return pool, freeness
