"""`servesim compare`: run scenario variants on the same workload and seed, print one table."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from servesim.cli.common import user_errors, warn

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

    @app.command("compare", help=HELP, short_help="Run variants of a scenario on the same workload and seed; one table.")
    @user_errors
    def compare(
        scenarios: Optional[list[Path]] = typer.Argument(None, help="Scenario YAML files (default: the packaged default)."),
        set_: list[str] = typer.Option([], "--set", help="Override a key; commas list variants, e.g. scheduler.name=vllm,sarathi (not inside [...] or {...}: autoscaler.pool=[p, d],d)."),
        out: Optional[str] = typer.Option(None, "--out", help="Output folder (default: out/compare)."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Seed for every variant (default: each scenario's)."),
        report: bool = typer.Option(False, "--report", help="Also write comparison.html."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No table on stdout."),
    ) -> None:
        from rich.console import Console
        from rich.table import Table

        from servesim.compare import expand_variants, run_comparison
        from servesim.output import check_out_dir, out_dir_option

        out_dir = out_dir_option(out, Path("out") / "compare")
        variants = expand_variants(scenarios or [], set_, seed)
        check_out_dir(out_dir)  # before the simulations, not after them
        console = Console(stderr=True)

        def done(label: str, summary: dict) -> None:
            for message in summary.get("warnings", []):
                warn(f"{label}: {message}")
            if not quiet:
                console.print(f"{label}: {summary['num_finished']:,} finished in {summary['simulated_time_s']:,.1f} s "
                              f"simulated ({summary['wall_time_s']:.1f} s wall)")

        header, rows, run_dirs = run_comparison(variants, out_dir, done)
        if report:
            from servesim.report import write_comparison_report

            write_comparison_report(run_dirs, out_dir, [v.label for v in variants])
        if not quiet:
            # one column per variant, one row per metric: fits a terminal with many metrics
            table = Table(title=f"{len(variants)} variants (table in {out_dir / 'comparison.csv'})")
            table.add_column("")
            for row in rows:
                table.add_column(str(row[0]), justify="right")
            for i, name in enumerate(header[1:], start=1):
                scale, label = _display_unit(name)
                table.add_row(label, *[_fmt(row[i], scale) for row in rows])
            Console().print(table)


def _display_unit(name: str) -> tuple[float, str]:
    """Latencies in milliseconds on screen, as `servesim run` prints them (the CSV keeps seconds)."""
    return (1e3, name[:-2] + " ms") if name.endswith(" s") else (1.0, name)


def _fmt(v, scale: float = 1.0) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        v *= scale
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)
