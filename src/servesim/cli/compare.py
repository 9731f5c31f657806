"""`servesim compare`: run scenario variants on the same workload and seed, print one table."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from servesim.cli.common import user_errors

HELP = """Run variants of SCENARIO (or of several scenario files) on the same workload and seed,
print one table and write it as comparison.csv.

A --set value with commas makes one variant per value; several such --set options make their
cross product, e.g.

  servesim compare --set scheduler.name=vllm,sarathi,vtc

  servesim compare examples/azure-conv.yaml --set workload.num_requests=2000 --set engine.max_num_seqs=64,256

Each variant's run folder (summary.json, requests, time series) goes under --out, next to
comparison.csv; --report also writes comparison.html."""


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""

    @app.command("compare", help=HELP)
    @user_errors
    def compare(
        scenarios: Optional[list[Path]] = typer.Argument(None, help="Scenario YAML files (default: the packaged default)."),
        set_: list[str] = typer.Option([], "--set", help="Override a key; commas list variants, e.g. scheduler.name=vllm,sarathi."),
        out: Path = typer.Option(Path("out") / "compare", "--out", help="Output folder."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Seed for every variant (default: each scenario's)."),
        report: bool = typer.Option(False, "--report", help="Also write comparison.html."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No table on stdout."),
    ) -> None:
        from rich.console import Console
        from rich.table import Table

        from servesim.compare import expand_variants, run_comparison

        variants = expand_variants(scenarios or [], set_, seed)
        console = Console(stderr=True)

        def done(label: str, summary: dict) -> None:
            if not quiet:
                console.print(f"{label}: {summary['num_finished']:,} finished in {summary['simulated_time_s']:,.1f} s "
                              f"simulated ({summary['wall_time_s']:.1f} s wall)")

        header, rows, run_dirs = run_comparison(variants, out, done)
        if report:
            from servesim.report import write_comparison_report

            write_comparison_report(run_dirs, out, [v.label for v in variants])
        if not quiet:
            # one column per variant, one row per metric: fits a terminal with many metrics
            table = Table(title=f"{len(variants)} variants (table in {out / 'comparison.csv'})")
            table.add_column("")
            for row in rows:
                table.add_column(str(row[0]), justify="right")
            for i, name in enumerate(header[1:], start=1):
                table.add_row(name, *[_fmt(row[i]) for row in rows])
            Console().print(table)


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)
