"""Optional summary sections, one per module, found automatically.

A module here defines `KEY` (the summary.json key) and `section(data: SectionInput) -> dict | None`
(a pure function; None when the run has nothing to report for it, e.g. no tenants). Policies
add what they are about (fairness, QoE, program completion times) without touching
`summary.py`.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass

import numpy as np

from servesim.metrics.summary import RequestColumns
from servesim.workload.request import Request


@dataclass(frozen=True)
class SectionInput:
    requests: list[Request]  # every request of the run, in arrival order, with final state
    cols: RequestColumns  # the same requests as columns
    step_ends_s: np.ndarray  # end time of every engine step (index = step number in token_steps)
    params: dict  # the scenario as a plain dict (scheduler parameters, SLOs, ...)

    def token_times(self, req: Request) -> np.ndarray:
        """Emission time of each generated token of `req`."""
        runs = req.token_steps
        if not runs:
            return np.empty(0)
        idx = np.concatenate([np.arange(runs[j], runs[j + 1] + 1) for j in range(0, len(runs), 2)])
        return self.step_ends_s[idx]


def compute_sections(data: SectionInput) -> dict:
    out = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        value = module.section(data)
        if value is not None:
            out[module.KEY] = value
    return out
