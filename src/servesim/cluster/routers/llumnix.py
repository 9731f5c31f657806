"""Llumnix dispatch: the freest instance by virtual usage (OSDI'24, `AlibabaPAI/llumnix`)."""

from __future__ import annotations

import math

from pydantic import Field

from servesim.cluster.routers import register
from servesim.cluster.routers.base import Router, RouterParams
from servesim.cluster.view import ClusterView, ReplicaView
from servesim.workload.request import Request


class LlumnixParams(RouterParams):
    block_size: int = Field(16, ge=1)
    """KV block size in tokens (Llumnix and vLLM default 16): converts queued tokens to blocks."""
    watermark: float = Field(0.01, ge=0, lt=1)
    """Share of blocks kept free (vLLM's `watermark` default 0.01) and not counted as available."""


def dispatch_load(v: ReplicaView, block_size: int, watermark: float) -> float:
    """Llumnix's dispatch load, negated freeness: n = running + waiting; available = free blocks
    - watermark - blocks of every queued prompt; load = -available / n (-inf when n = 0)."""
    n = v.num_running + v.num_waiting
    if n == 0:
        return -math.inf
    free = v.num_gpu_blocks - v.kv_used_blocks - watermark * v.num_gpu_blocks
    return -(free - math.ceil(v.outstanding_prefill_tokens / block_size)) / n


@register("llumnix")
class Llumnix(Router):
    """argmin dispatch load = argmax freeness `(M - sum of virtual usages) / B` (Llumnix `Load`
    dispatch policy, initial open-source `instance_info.py`): an empty replica is the freest;
    ties go to the lowest index. Queued tokens are the view's outstanding prefill tokens (servesim
    reads them in tokens; Llumnix sums the blocks of the waiting requests)."""

    Params = LlumnixParams

    def route(self, req: Request, view: ClusterView) -> int | None:
        p = self.params
        return min(view.candidates, key=lambda i: (dispatch_load(view.view(i), p.block_size, p.watermark), i))
