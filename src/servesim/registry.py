"""Plug-ins registered by name: schedulers, routers, and every other kind of policy.

Each kind lives in one package, one policy per module, each module decorating its class with
`@registry.register("name")`. The modules are imported on first lookup, so adding a policy
needs only its own file.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Generic, TypeVar

from servesim.errors import InputError

T = TypeVar("T")


class Registry(Generic[T]):
    """A per-process table of classes, filled once from a package and never changed after."""

    def __init__(self, kind: str, package: str, path: list[str], helpers: tuple[str, ...] = ("base",)) -> None:
        self.kind = kind  # "scheduler", "router", ... (for messages)
        self._package = package
        self._path = path
        self._helpers = helpers  # modules of the package that register nothing
        self._classes: dict[str, type[T]] = {}
        self._loaded = False

    def register(self, name: str):
        """Class decorator: make a class available under `name` (scenario files, CLI, reports)."""

        def wrap(cls: type[T]) -> type[T]:
            cls.name = name
            self._classes[name] = cls
            return cls

        return wrap

    def _load_all(self) -> None:
        if not self._loaded:
            for info in pkgutil.iter_modules(self._path):
                if info.name not in self._helpers:
                    importlib.import_module(f"{self._package}.{info.name}")
            self._loaded = True

    def available(self) -> list[str]:
        self._load_all()
        return sorted(self._classes)

    def _load_named(self, name: str) -> None:
        """Import the module named after `name` ("least-requests": least_requests.py), if any."""
        module = str(name).replace("-", "_")
        if module.isidentifier() and module not in self._helpers and any(
                info.name == module for info in pkgutil.iter_modules(self._path)):
            importlib.import_module(f"{self._package}.{module}")

    def get(self, name: str) -> type[T]:
        """The class registered as `name` (InputError naming the allowed ones). The module named
        after it is tried first, so a run imports the policies it uses, not every policy's
        module and params model (about 50 ms of a small run's start-up); then all of them."""
        if name not in self._classes and not self._loaded:
            self._load_named(name)
        if name not in self._classes:
            self._load_all()
        try:
            return self._classes[name]
        except KeyError:
            raise InputError(f"unknown {self.kind} '{name}'; allowed: {', '.join(self.available())}") from None
