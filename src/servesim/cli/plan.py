"""`servesim plan PLAN.yaml`: search deployments for the cheapest (or best per GPU) that meets the SLOs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from servesim.cli.common import user_errors

HELP = """Search the deployments a plan file describes (GPU types, parallelism, replicas, engine
settings, scheduler, router) for the one that serves the traffic within the SLOs at the lowest
cost, or with the most goodput per GPU or per dollar. A static pass prunes what cannot fit or is
clearly worse; the rest is simulated with goodput bisection. Results go to --out: plan.csv
(plan.parquet with pyarrow), report.html (Pareto front), best.yaml (ready to `servesim run`),
deploy.md (vLLM/SGLang flags) and cache.jsonl, which makes a re-run or an interrupted run resume
without simulating anything twice. See docs/planner.md."""


def register(app: typer.Typer) -> None:
    @app.command("plan", help=HELP, short_help="Search deployments for the cheapest (or most goodput) one that meets the SLOs.")
    @user_errors
    def plan_cmd(
        plan_file: Path = typer.Argument(..., help="Plan YAML file."),
        out: Path = typer.Option(Path("out") / "plan", "--out", help="Output folder (also holds the probe cache)."),
        executor: str = typer.Option("local", "--executor", help="Where simulations run: local or ray."),
        address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (--executor ray)."),
        jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="Local worker processes (default: CPU count)."),
        no_cache: bool = typer.Option(False, "--no-cache", help="Ignore and do not write cache.jsonl."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or table."),
    ) -> None:
        from servesim.cli.plan_display import print_outcome, search_progress
        from servesim.planner import plan

        with search_progress(enabled=not quiet) as progress:
            outcome = plan(plan_file, out, executor=executor, jobs=jobs, address=address,
                           use_cache=not no_cache, progress=progress)
        if not quiet:
            print_outcome(outcome, out)
