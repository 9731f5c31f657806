"""Router plug-ins, one per file, registered by name (`servesim catalog routers`)."""

from __future__ import annotations

from servesim.cluster.routers.base import Router, RouterParams
from servesim.registry import Registry

REGISTRY: Registry[Router] = Registry("router", __name__, __path__, helpers=("base", "common"))
register = REGISTRY.register
available = REGISTRY.available
get_router = REGISTRY.get

__all__ = ["Router", "RouterParams", "available", "get_router", "register"]
