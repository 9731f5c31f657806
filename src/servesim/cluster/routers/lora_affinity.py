"""LoRA adapter affinity: prefer replicas with the request's adapter loaded, then ones with a
free adapter slot, and among those the least loaded.

Source: the Gateway API Inference Extension / llm-d `lora-affinity` scorer (a pod with the
adapter active or waiting scores highest, a pod with room to load one more adapter next, the
rest 0) combined, as its scheduling profiles do, with a queue scorer; AIBrix's adapter-aware
routing likewise sends a request to a pod that has its adapter. The weights of the two scores
are not fixed upstream (they are profile configuration): the defaults here let affinity win
unless the queues differ by a lot, and are parameters.
"""

from __future__ import annotations

from pydantic import Field

from servesim.cluster.routers import register
from servesim.cluster.routers.base import Router, RouterParams
from servesim.cluster.routers.common import max_pick
from servesim.cluster.view import ClusterView
from servesim.workload.request import Request


class LoRAAffinityParams(RouterParams):
    loaded_score: float = Field(1.0, ge=0, le=1)
    """Affinity of a replica with the adapter on its GPU (or loading): GIE scores 1."""
    free_slot_score: float = Field(0.8, ge=0, le=1)
    """Affinity of a replica with a free adapter slot (GIE scores 0.8); the others score 0."""
    lora_weight: float = Field(2.0, ge=0)
    """Weight of the affinity score in the sum."""
    queue_weight: float = Field(1.0, ge=0)
    """Weight of the queue score: (max - q) / (max - min) over the candidates' in-flight
    requests q (1 for the shortest, 0 for the longest; GIE's queue scorer)."""


@register("lora-affinity")
class LoRAAffinity(Router):
    """max over replicas of `lora_weight * affinity + queue_weight * queue score` (random among ties).

    A request without an adapter scores every replica's affinity alike, so it goes to the
    shortest queue. Residency is read live (vLLM exports its running and waiting adapters).
    """

    Params = LoRAAffinityParams

    def route(self, req: Request, view: ClusterView) -> int | None:
        p = self.params
        cands = view.candidates
        queues = [view.outstanding(i) for i in cands]
        lo, hi = min(queues), max(queues)
        span = hi - lo
        scores = []
        for i, q in zip(cands, queues):
            affinity = 1.0
            if req.lora is not None:
                loaded, free = view.lora_state(i, req.lora)
                affinity = p.loaded_score if loaded else p.free_slot_score if free else 0.0
            queue = (hi - q) / span if span else 1.0
            scores.append(p.lora_weight * affinity + p.queue_weight * queue)
        return max_pick(cands, scores, self.rng)
