"""Autoscaler plug-ins, one per file, registered by name (`servesim catalog autoscalers`)."""

from __future__ import annotations

from servesim.cluster.autoscalers.base import Autoscaler, AutoscalerParams, Sample
from servesim.registry import Registry

REGISTRY: Registry[Autoscaler] = Registry("autoscaler", __name__, __path__)
register = REGISTRY.register
available = REGISTRY.available
get_autoscaler = REGISTRY.get

__all__ = ["Autoscaler", "AutoscalerParams", "Sample", "available", "get_autoscaler", "register"]
