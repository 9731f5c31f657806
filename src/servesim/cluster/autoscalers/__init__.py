"""Autoscaler plug-ins, one per file, registered by name (`servesim catalog autoscalers`)."""

from __future__ import annotations

import importlib
import pkgutil

from servesim.cluster.autoscalers.base import Autoscaler, AutoscalerParams, Sample
from servesim.errors import InputError

_REGISTRY: dict[str, type[Autoscaler]] = {}
_LOADED = False


def register(name: str):
    """Class decorator: make an autoscaler available under `name`."""

    def wrap(cls: type[Autoscaler]) -> type[Autoscaler]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def _load_all() -> None:
    global _LOADED  # a per-process table of classes, filled once
    if not _LOADED:
        for info in pkgutil.iter_modules(__path__):
            if info.name != "base":
                importlib.import_module(f"{__name__}.{info.name}")
        _LOADED = True


def available() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get_autoscaler(name: str) -> type[Autoscaler]:
    """The autoscaler class registered as `name` (InputError naming the allowed ones)."""
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown autoscaler '{name}'; allowed: {', '.join(available())}") from None


__all__ = ["Autoscaler", "AutoscalerParams", "Sample", "available", "get_autoscaler", "register"]
