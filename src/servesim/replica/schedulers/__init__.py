"""Scheduler plug-ins, one per file, registered by name.

Every module in this folder is imported on first use, so a new policy needs only its own
file with `@register("name")` on its `Scheduler` subclass.
"""

from __future__ import annotations

from servesim.registry import Registry
from servesim.replica.schedulers.base import Scheduler, SchedulerOutput, SchedulerParams

REGISTRY: Registry[Scheduler] = Registry("scheduler", __name__, __path__, helpers=("base", "queues", "vllm_steps"))
register = REGISTRY.register
available = REGISTRY.available
get_scheduler = REGISTRY.get

__all__ = ["Scheduler", "SchedulerOutput", "SchedulerParams", "available", "get_scheduler", "register"]
