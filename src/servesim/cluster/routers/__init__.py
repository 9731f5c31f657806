"""Router plug-ins, one per file, registered by name (`servesim catalog routers`)."""

from __future__ import annotations

import importlib
import pkgutil

from servesim.cluster.routers.base import Router, RouterParams
from servesim.errors import InputError

_REGISTRY: dict[str, type[Router]] = {}
_LOADED = False


def register(name: str):
    """Class decorator: make a router available under `name`."""

    def wrap(cls: type[Router]) -> type[Router]:
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


def get_router(name: str) -> type[Router]:
    """The router class registered as `name` (InputError naming the allowed ones)."""
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown router '{name}'; allowed: {', '.join(available())}") from None


__all__ = ["Router", "RouterParams", "available", "get_router", "register"]
