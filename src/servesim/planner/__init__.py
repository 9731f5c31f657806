"""The planner: goodput search and configuration search (`servesim plan PLAN.yaml`).

    from servesim.planner import plan
    outcome = plan("examples/plans/llama8b-conv.yaml", "out/plan")
    outcome.search.best.cand.label

Modules: space (plan schema, candidates), mapping (candidate -> scenario), static (first
pass), goodput (bisection), drive (runs bisections through the cache), search
(orchestration), mix (Mélange ILP), executors (local, Ray), cache, output and report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from servesim.planner.cache import ProbeCache
from servesim.planner.search import SearchResult

__all__ = ["PlanOutcome", "plan"]


@dataclass
class PlanOutcome:
    search: SearchResult
    mix: object | None  # planner.mix.MixResult when the plan has a mix section
    files: list[str]  # written into the output folder


def plan(path: str | Path, out_dir: str | Path, executor: str = "local", jobs: int | None = None,
         address: str | None = None, use_cache: bool = True, progress: Callable | None = None) -> PlanOutcome:
    """Run a plan file; results (and the probe cache, `cache.jsonl`) go to `out_dir`."""
    from servesim.planner.drive import Counters
    from servesim.planner.executors import make_executor
    from servesim.planner.output import write_outputs
    from servesim.planner.plan import load_plan
    from servesim.planner.search import run_search

    config, base = load_plan(path)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        from servesim.errors import InputError

        raise InputError(f"--out '{out}' exists and is not a folder")
    cache = ProbeCache(out / "cache.jsonl" if use_cache else None)
    pool = make_executor(executor, jobs, address)
    try:
        result = run_search(config, base, pool, cache, progress)
        mix = None
        if config.mix is not None:
            from servesim.planner.mix import plan_mix

            types = [e for e in result.ranked if e.status == "ok"]
            mix = plan_mix(types, config.mix, base, config.goodput, pool, cache, Counters(), out / "mix")
        files = write_outputs(out, result, mix)
    finally:
        pool.close()
        cache.close()
    return PlanOutcome(result, mix, files)
