"""servesim: fast, faithful simulation of LLM inference serving.

Public API::

    from servesim import load_scenario, simulate
    result = simulate(load_scenario("examples/azure-conv.yaml", ["tp=2"]))
    result.summary()["ttft_s"]["p99"]
"""

from servesim.errors import InputError
from servesim.scenario import Scenario, load_scenario
from servesim.simulation import Result, simulate

__all__ = ["InputError", "Result", "Scenario", "load_scenario", "simulate"]
__version__ = "0.1.0"
