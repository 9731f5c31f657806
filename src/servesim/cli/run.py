"""`servesim run`: simulate one scenario, write its run folder, print a summary table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from servesim.cli.common import lazy_help, schema_help, user_errors, warn

_SUMMARY = "Simulate SCENARIO (a YAML file; default: the packaged default scenario)."


def _help_text() -> str:
    from servesim.replica.schedulers import available, get_scheduler
    from servesim.scenario import Scenario

    lines = [_SUMMARY, "",
             "Scenario keys (set any with --set KEY=VALUE, e.g. --set model=llama-3.1-70b --set tp=4):", ""]
    lines += schema_help(Scenario)
    for name in available():
        lines += schema_help(get_scheduler(name).Params, f"scheduler.{name}: scheduler.")
    return "\n\n".join(lines)


def register(app: typer.Typer) -> None:
    @app.command("run", help=_SUMMARY, cls=lazy_help(_help_text))
    @user_errors
    def run(
        scenario: Optional[Path] = typer.Argument(None, help="Scenario YAML file."),
        set_: list[str] = typer.Option([], "--set", help="Override a key, e.g. --set engine.max_num_seqs=128."),
        out: Optional[str] = typer.Option(None, "--out", help="Output folder (default: out/<scenario name>)."),
        report: bool = typer.Option(False, "--report", help="Also write report.html into the output folder."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or table."),
        json_out: bool = typer.Option(False, "--json", help="Print summary.json to stdout instead of a table."),
    ) -> None:
        from servesim.cli.display import progress_bar, summary_table
        from servesim.output import check_out_dir, out_dir_option, prepare_requests, write_run
        from servesim.scenario import load_scenario
        from servesim.simulation import simulate

        scn = load_scenario(scenario, set_)
        out_dir = out_dir_option(out, Path("out") / (scenario.stem if scenario else "default"))
        check_out_dir(out_dir)  # before the simulation, not after it
        with progress_bar(enabled=not quiet and not json_out) as progress:
            result = simulate(scn, progress=progress, keep_requests=False)
        prepare_requests(result)  # (requests.csv made on the second core while the summary is)
        summary = result.summary()
        write_run(result, out_dir, summary)
        if report:
            from servesim.report import write_run_report

            write_run_report(out_dir)
        for message in summary.get("warnings", []):
            warn(message)
        if json_out:
            typer.echo(json.dumps(summary, indent=2))
        elif not quiet:
            summary_table(summary, scn, out_dir)
