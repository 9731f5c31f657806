"""`servesim calibrate MEASURED.csv` and `servesim perf-report` (the docs error table)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from servesim.cli.common import user_errors

from servesim.cli.perf_common import replace_marked_block, write_atomic
from servesim.errors import InputError

# = servesim.perf.measured.MEASURED_POINTS (a test checks), spelled here so that registering the
# command imports nothing of the performance model
DEFAULT_MEASURED = Path(__file__).parents[1] / "perf" / "data" / "measured" / "measured_points.csv"
TABLE_BEGIN = "<!-- perf-report:begin -->"
TABLE_END = "<!-- perf-report:end -->"


def register(app: typer.Typer) -> None:
    @app.command("calibrate")
    @user_errors
    def calibrate_cmd(
        measured: Path = typer.Argument(..., help="CSV in the schema of measured_points.csv."),
        output: Path = typer.Option(Path("calibration.yaml"), "--output", "-o", help="Calibration file to write (name it in a scenario's perf.calibration)."),
        from_priors: bool = typer.Option(False, "--from-priors", help="Start from the priors only, ignoring the shipped fit (how the shipped fit is made)."),
        sweeps: int = typer.Option(2, help="Coordinate-descent sweeps over the constants."),
    ) -> None:
        """Fit the shared physical constants to measured points; print the per-source error before and after."""
        from servesim.perf.calibration import dump_calibration
        from servesim.perf.fit import fit
        from servesim.perf.measured import read_points
        from servesim.perf.validate import error_table, evaluate, markdown_table

        if sweeps < 1:
            raise InputError(f"--sweeps must be >= 1, got {sweeps}")
        points = read_points(measured)
        shipped_fit = not from_priors
        before, skipped = evaluate(points, shipped_fit=shipped_fit)
        calibration = fit(points, shipped_fit=shipped_fit, sweeps=sweeps)
        after, _ = evaluate(points, calibration, shipped_fit=shipped_fit)
        meta = {"fitted_to": str(measured), "points": len(before), "base": "priors" if from_priors else "shipped"}
        write_atomic(output, dump_calibration(calibration, meta))
        print(markdown_table(error_table(before), error_table(after)))
        for p, why in skipped:
            print(f"skipped {measured}:{p.line}: {why}")
        print(f"wrote {output}")

    @app.command("perf-report")
    @user_errors
    def perf_report_cmd(
        measured: Path = typer.Option(DEFAULT_MEASURED, show_default="the shipped measured_points.csv, 152 points",
                                      help="Measured points CSV."),
        docs: Optional[Path] = typer.Option(None, help="Markdown file whose table between the perf-report markers is replaced (e.g. docs/perf-model.md); print only when omitted."),
    ) -> None:
        """Regenerate the per-source error table of docs/perf-model.md (priors, shipped fit, held-out)."""
        from servesim.perf.report import report_markdown

        table = report_markdown(measured)
        if docs is None:
            print(table)
            return
        replace_marked_block(docs, TABLE_BEGIN, TABLE_END, table)
        print(f"updated {docs}")
