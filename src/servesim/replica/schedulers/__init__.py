"""Scheduler plug-ins, one per file, registered by name.

Every module in this folder is imported on first use, so a new policy needs only its own
file with `@register("name")` on its `Scheduler` subclass.
"""

from __future__ import annotations

import importlib
import pkgutil

from servesim.errors import InputError
from servesim.replica.schedulers.base import Scheduler, SchedulerOutput, SchedulerParams

_REGISTRY: dict[str, type[Scheduler]] = {}
_LOADED = False


def register(name: str):
    """Class decorator: make a scheduler available under `name` (scenario files, CLI, reports)."""

    def wrap(cls: type[Scheduler]) -> type[Scheduler]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def _load_all() -> None:
    global _LOADED  # the registry is a per-process table of classes, filled once, never mutated after
    if not _LOADED:
        for info in pkgutil.iter_modules(__path__):
            if info.name not in ("base", "queues", "vllm_steps"):
                importlib.import_module(f"{__name__}.{info.name}")
        _LOADED = True


def available() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get_scheduler(name: str) -> type[Scheduler]:
    """The scheduler class registered as `name` (InputError naming the allowed ones)."""
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown scheduler '{name}'; allowed: {', '.join(available())}") from None


__all__ = ["Scheduler", "SchedulerOutput", "SchedulerParams", "available", "get_scheduler", "register"]
