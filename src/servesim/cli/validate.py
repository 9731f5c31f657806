"""`servesim validate`: replay measured serving runs end to end and report the error per group."""

from __future__ import annotations

import csv
import io
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from servesim.cli.common import user_errors
from servesim.cli.perf_common import replace_marked_block, write_atomic
from servesim.errors import InputError

TABLE_BEGIN = "<!-- fidelity:begin -->"
TABLE_END = "<!-- fidelity:end -->"


def _rows_csv(results) -> str:
    """One line per simulated row; errors to 1e-6 so that medians taken from the file match the printed ones."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["id", "backend", "system", "model", "tp", "isl", "osl", "concurrency", "measured_ttft_ms",
                "simulated_ttft_ms", "ttft_error", "measured_tpot_ms", "simulated_tpot_ms", "tpot_error"])
    for r in results:
        w.writerow([r.row.id, r.row.backend, r.row.system, r.row.model, r.row.tp, r.row.isl, r.row.osl,
                    r.row.concurrency, f"{r.row.ttft_s * 1e3:.4f}", f"{r.ttft_s * 1e3:.4f}", f"{r.ttft_error:.6f}",
                    f"{r.row.tpot_s * 1e3:.4f}", f"{r.tpot_s * 1e3:.4f}", f"{r.tpot_error:.6f}"])
    return out.getvalue()


def _selected(rows, only: list[str], ids: Optional[Path]):
    """The rows `--only` and `--ids` keep, in file order; a selector that keeps nothing is an error."""
    if only:
        groups = {(r.backend, r.system) for r in rows}
        for sel in only:
            engine, _, gpu = sel.partition(":")
            if not any(e == engine and (not gpu or g == gpu) for e, g in groups):
                allowed = ", ".join(sorted({e for e, _ in groups} | {f"{e}:{g}" for e, g in groups}))
                raise InputError(f"--only {sel!r} matches no row; allowed: {allowed}")
        keep = [sel.partition(":")[::2] for sel in only]
        rows = [r for r in rows if any(r.backend == e and (not g or r.system == g) for e, g in keep)]
    if ids is not None:
        try:
            lines = ids.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"--ids {str(ids)!r} cannot be read: {exc}") from None
        if lines and lines[0].split(",")[0] == "id":  # a --output file: its first column
            lines = [line.split(",")[0] for line in lines[1:]]
        wanted = {line.strip() for line in lines if line.strip()}
        unknown = sorted(wanted - {r.id for r in rows})
        if unknown:
            raise InputError(f"--ids lists {len(unknown)} id(s) not among the selected rows, e.g. {unknown[0]!r}")
        rows = [r for r in rows if r.id in wanted]
    return rows


# = servesim.validation.silicon.DEFAULT_SILICON (a test checks), spelled here so that registering
# the command imports nothing of the simulation: every `servesim ...` start-up would pay for it.
DEFAULT_SILICON = Path(__file__).parents[1] / "validation" / "data" / "silicon_calibration.csv.gz"


def register(app: typer.Typer) -> None:
    @app.command("validate", short_help="Replay measured serving runs end to end; the TTFT and TPOT error per engine and GPU.")
    @user_errors
    def validate_cmd(
        measured: Path = typer.Option(DEFAULT_SILICON, show_default="the shipped AIConfigurator silicon sample, 3,340 runs",
                                      help="Measured serving runs (schema of the AIConfigurator silicon sample; .csv or .csv.gz)."),
        sample: Optional[int] = typer.Option(None, min=1, help="Simulate only this many expressible rows, spread evenly through the file (quick checks)."),
        only: list[str] = typer.Option([], "--only", metavar="ENGINE[:GPU]", help="Simulate only this engine's rows, or one group's (repeatable: --only sglang:h200_sxm --only trtllm); held-out sides stay those of the whole file."),
        ids: Optional[Path] = typer.Option(None, "--ids", help="Simulate only the rows whose ids this file lists: one per line, or a CSV with an id column (a --output file)."),
        ramp_up_s: float = typer.Option(0.0, min=0.0, help="Client start-up ramp: users start evenly over this many seconds."),
        ramp_cycles: Optional[float] = typer.Option(None, min=0.0, help="Instead: start the users over this share of one request's decode time (1 = fully out of step)."),
        warmup_continuous: bool = typer.Option(False, "--warmup-continuous", help="Run the warm-up requests in the same closed loop as the measured ones (default: AIPerf's phases, the profiling users start at once on an idle engine)."),
        no_frontend: bool = typer.Option(False, "--no-frontend", help="Leave out the API-server front end (requests reach the engine at once)."),
        frontend_time_cv: Optional[float] = typer.Option(None, min=0.0, max=10.0, help="Play every row with this spread (coefficient of variation) of the front end's per-request time instead of the fitted per-(GPU, engine) values."),
        trailing_rounds: int = typer.Option(1, min=0, max=100, help="Unmeasured requests per user sent after the measured ones (the benchmark's later rounds keep the engine loaded while the last measured requests decode); 0 stops with the measured requests."),
        engine_slots_held: bool = typer.Option(True, "--engine-slots-held/--no-engine-slots-held", help="Play the campaigns of validation/silicon.py's ENGINE_SLOTS_HELD with one batch slot held (TensorRT-LLM 1.0.0rc3 on H100; on by default since those rows play their recorded 20 requests per user and the API server's token-rate ceiling, docs/fidelity-history.md)."),
        uncalibrated: bool = typer.Option(False, "--uncalibrated", help="Leave out the shipped serving fit (engine constants as in engines.yaml)."),
        jobs: Optional[int] = typer.Option(None, "--jobs", "-j", min=1, help="Local worker processes simulating rows (default: CPU count; the results do not depend on it)."),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the per-row results as CSV."),
        docs: Optional[Path] = typer.Option(None, help="Markdown file whose block between the fidelity markers is replaced (docs/fidelity.md)."),
        fit_output: Optional[Path] = typer.Option(None, help="Fit the serving constants first and write calibration_serving.yaml and frontend.yaml into this folder."),
        per_group: int = typer.Option(10, min=1, help="With --fit-output: rows per (GPU, engine) the fit simulates."),
        frontend_only: bool = typer.Option(False, "--frontend-only", help="With --fit-output: refit only the per-(engine, GPU) front ends, keeping the shipped engine constants; writes frontend.yaml."),
        engine: list[str] = typer.Option([], "--engine", help="With --frontend-only: refit only this engine's front ends (repeatable: vllm, sglang, trtllm); the others are written as shipped."),
    ) -> None:
        """Simulate every expressible measured run end to end (closed-loop client, front end, engine)
        and print the median error of TTFT and TPOT per engine and GPU, plus the rows it cannot express."""
        from servesim.cli.display import live_bar
        from servesim.validation.fit import spread_sample
        from servesim.validation.run import group_errors, held_out_line, markdown_table, skipped_table, validate_rows
        from servesim.validation.silicon import SCHEDULERS, ClientOptions, inexpressible_reason, read_rows
        from servesim.validation.silicon_file import held_out_ids

        # the options first: a wrong flag is named before the measured file is read
        if fit_output is not None and not fit_output.is_dir():
            raise InputError(f"--fit-output {str(fit_output)!r} is not a folder")
        unknown = sorted(set(engine) - set(SCHEDULERS)) if fit_output is not None and frontend_only else []
        if unknown:
            raise InputError(f"--engine {unknown[0]!r} is not a measured engine; allowed: {', '.join(sorted(SCHEDULERS))}")
        rows = read_rows(measured)
        held_out = held_out_ids(rows)  # of the whole file: a sample keeps its rows' sides
        rows = _selected(rows, only, ids)
        options = ClientOptions(ramp_up_s=ramp_up_s, ramp_cycles=ramp_cycles, frontend=not no_frontend,
                                warmup_drains=not warmup_continuous, frontend_time_cv=frontend_time_cv,
                                engine_slots_held=engine_slots_held, trailing_rounds=trailing_rounds)
        if fit_output is not None:
            return _fit(rows, options, measured.name, fit_output, per_group, engine if frontend_only else None)
        if sample is not None:
            ok = [r for r in rows if inexpressible_reason(r) is None]
            rows = spread_sample(ok, sample)
        with live_bar("simulating rows") as update:
            results, skipped = validate_rows(rows, options, calibration=None if uncalibrated else "shipped",
                                             progress=lambda done, total: update(done, total, ""),
                                             jobs=jobs if jobs is not None else (os.cpu_count() or 1))
        block = (f"Simulated rows: {len(results)} of {len(rows)}.\n\n{markdown_table(group_errors(results))}\n\n"
                 f"{held_out_line(results, held_out)}\n\n"
                 f"Rows not simulated, by reason:\n\n{skipped_table(skipped)}")
        print(block)
        if output is not None:
            write_atomic(output, _rows_csv(results))
            print(f"wrote {output}")
        if docs is not None:
            replace_marked_block(docs, TABLE_BEGIN, TABLE_END, block)
            print(f"updated {docs}")


def _fit(rows, options, measured: str, folder: Path, per_group: int, frontend_engines: list[str] | None) -> None:
    """`--fit-output`: fit the serving constants and front ends to `rows` and write
    calibration_serving.yaml and frontend.yaml into `folder`; with `frontend_engines` (from
    --frontend-only: those engines', all if empty) only the front ends, as frontend.yaml."""
    import yaml

    from servesim.perf.calibration import dump_calibration
    from servesim.validation.calibrate import fit_serving, refit_frontends

    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    header = f"# Front-end constants per engine, fitted by `servesim validate --fit-output` on {measured}"
    if frontend_engines is not None:
        frontend = refit_frontends(rows, options, per_group, log=log, engines=frontend_engines)
        header += f";\n# the <engine>@<gpu> entries refitted with --frontend-only --per-group {per_group}. Seconds.\n"
        write_atomic(folder / "frontend.yaml", header + yaml.safe_dump(frontend, sort_keys=True))
        print(f"wrote {folder / 'frontend.yaml'}")
        return
    calibration, frontend = fit_serving(rows, options, per_group, log=log)
    write_atomic(folder / "calibration_serving.yaml", dump_calibration(calibration, {"fitted_to": measured}))
    write_atomic(folder / "frontend.yaml", header + ".\n" + yaml.safe_dump(frontend, sort_keys=True))
    print(f"wrote {folder / 'calibration_serving.yaml'} and {folder / 'frontend.yaml'}")
