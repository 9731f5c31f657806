"""Small plans for the planner tests: a generated workload, a few hundred requests per probe."""

from __future__ import annotations

import copy
from typing import Any

SMALL_BASE: dict[str, Any] = {
    "seed": 0,
    "model": "llama-3.1-8b",
    "workload": {"arrival": {"process": "poisson", "rate_per_s": 1.0},
                 "lengths": {"prompt_tokens": [200, 1200], "output_tokens": [50, 250]}},
    "slo": {"ttft_s": 1.0, "tpot_s": 0.05},
}


def small_plan(**sections: Any) -> dict[str, Any]:
    """A plan over the small base scenario; keyword sections replace the defaults."""
    plan: dict[str, Any] = {
        "scenario": copy.deepcopy(SMALL_BASE),
        "traffic": {"rate_per_s": 12.0},
        "goodput": {"num_requests": 200, "min_duration_s": 10.0, "rel_tol": 0.05},
        "space": {"gpu": ["h100-sxm", "a100-80gb", "l40s"], "max_num_seqs": [32, 128]},
    }
    plan.update(copy.deepcopy(sections))
    return plan
