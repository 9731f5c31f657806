"""Scheduler plug-ins, one per file, registered by name.

Every module in this folder is imported on first use, so a new policy needs only its own
file with `@register("name")` on its `Scheduler` subclass.
"""

from __future__ import annotations

from servesim.registry import Registry
from servesim.replica.schedulers.base import Scheduler, SchedulerOutput, SchedulerParams

# modules of this package that hold shared code, not a policy (the registry does not import them)
HELPERS = ("base", "outputs", "queues", "vllm_steps", "andes_pending", "autellix_accounting", "fastswitch_fairness")
REGISTRY: Registry[Scheduler] = Registry("scheduler", __name__, __path__, helpers=HELPERS)
register = REGISTRY.register
available = REGISTRY.available
get_scheduler = REGISTRY.get

__all__ = ["Scheduler", "SchedulerOutput", "SchedulerParams", "available", "get_scheduler", "register"]
