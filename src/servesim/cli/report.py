"""`servesim report`: HTML report for one run folder, or a comparison of several."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from servesim.errors import InputError


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("report")(report)


def report(
    out_dirs: list[Path] = typer.Argument(
        ..., metavar="OUT_DIR", help="Run output folder(s) written by `servesim run --out`."),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Folder for the report; required when comparing several runs."),
) -> None:
    """Write OUT_DIR/report.html for one run, or DIR/comparison.html for several (--out DIR)."""
    from servesim.report import write_comparison_report, write_run_report

    try:
        if len(out_dirs) == 1:
            target = None if out is None else out / "report.html"
            path = write_run_report(out_dirs[0], target)
        else:
            if out is None:
                raise InputError("comparing several runs needs --out DIR for comparison.html")
            path = write_comparison_report(out_dirs, out)
    except InputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(f"wrote {path}")
