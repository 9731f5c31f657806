"""servesim: fast, faithful simulation of LLM inference serving.

Public API::

    from servesim import load_scenario, simulate
    result = simulate(load_scenario("examples/azure-conv.yaml", ["tp=2"]))
    result.summary()["ttft_s"]["p99"]
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from servesim.errors import InputError

if TYPE_CHECKING:
    from servesim.scenario import Scenario, load_scenario
    from servesim.simulation import Result, simulate

__all__ = ["InputError", "Result", "Scenario", "load_scenario", "simulate"]
__version__ = "0.1.0"

# The simulation stack (pydantic schema, numpy, every policy) is imported on first use, so that
# `servesim --help` and commands that never simulate do not pay for it.
_LAZY = {"Scenario": "servesim.scenario", "load_scenario": "servesim.scenario",
         "Result": "servesim.simulation", "simulate": "servesim.simulation"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'servesim' has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
