"""`servesim trace`: list shipped traces, summarise, convert/slice/rescale, and generate traces."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from servesim.cli.common import user_errors

trace_app = typer.Typer(help="Workload traces: list, stats, convert (slice, rescale), generate.",
                        no_args_is_help=True, add_completion=False)


def register(app: typer.Typer) -> None:
    """Add `servesim trace ...` to the app."""
    app.add_typer(trace_app, name="trace")


@trace_app.command("list")
def list_traces() -> None:
    """Shipped traces, length tables and ServeGen client models (usable by name)."""
    from servesim.workload.traces.registry import SERVEGEN_MODELS, SHIPPED_TRACES

    for t in SHIPPED_TRACES.values():
        kind = "trace" if t.has_arrival else "lengths"
        typer.echo(f"{t.name:24} {kind:8} {t.rows:>7,} rows  {t.license:11} {t.description}")
    for name, (_, datasets) in SERVEGEN_MODELS.items():
        extra = " + length PMFs (lengths: {dataset: %s})" % name if datasets else ""
        typer.echo(f"servegen-{name:15} clients  arrival.process: servegen, model: {name}{extra}")


def _format_stats(name: str, s: dict[str, Any]) -> str:
    lines = [f"{name}: {s['num_requests']:,} requests"]
    if "duration_s" in s:
        lines.append(f"  span {s['duration_s']:.1f} s ({s['duration_s'] / 60:.1f} min), mean rate "
                     f"{s['mean_rate_per_s'] or 0:.2f} req/s, peak {s['peak_rate_per_s']} req/s "
                     f"({s['peak_rate_per_min']} req/min), inter-arrival CV {s['interarrival_cv'] or 0:.2f}")
    for key in ("input_len", "output_len"):
        d = s[key]
        lines.append(f"  {key:10} p50 {d['p50']:,.0f}  p90 {d['p90']:,.0f}  p99 {d['p99']:,.0f}  "
                     f"max {d['max']:,}  mean {d['mean']:,.1f}")
    if "prefix_reuse_ratio" in s:
        lines.append(f"  prefix reuse {100 * s['prefix_reuse_ratio']:.1f} % of {s['num_blocks']:,} prompt blocks "
                     f"({s['hash_block_tokens']}-token blocks, {s['num_unique_blocks']:,} unique)")
    if s.get("skipped_rows"):
        lines.append(f"  skipped {s['skipped_rows']:,} bad rows")
    return "\n".join(lines)


@trace_app.command("stats")
@user_errors
def stats(
    trace: str = typer.Argument(..., help="Shipped name (servesim trace list) or a CSV/JSONL(.gz) file."),
    json_out: bool = typer.Option(False, "--json", help="Print the statistics as JSON."),
    skip_bad_rows: bool = typer.Option(False, "--skip-bad-rows", help="Skip malformed rows and count them."),
) -> None:
    """Rows, span, mean/peak rate, inter-arrival CV, length percentiles, prefix reuse."""
    from servesim.workload.stats import trace_stats
    from servesim.workload.traces import TraceReader, resolve_trace

    path, display, _ = resolve_trace(trace)
    reader = TraceReader(path, display_name=display, skip_bad_rows=skip_bad_rows)
    result = trace_stats(reader.rows())
    if skip_bad_rows:
        result["skipped_rows"] = reader.skipped_rows
    typer.echo(json.dumps(result, indent=2) if json_out else _format_stats(display, result))


@trace_app.command("convert")
@user_errors
def convert(
    source: str = typer.Argument(..., help="Shipped name or trace file to read."),
    dest: Path = typer.Argument(..., help="Output file: .csv or .jsonl (Mooncake style), optionally .gz."),
    start_s: float = typer.Option(0.0, "--start-s", help="Keep rows from this many seconds after the first row."),
    end_s: Optional[float] = typer.Option(None, "--end-s", help="Keep rows up to this many seconds after the first row."),
    speedup: float = typer.Option(1.0, "--speedup", help="Divide times by this (2 = twice the rate)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Keep at most this many rows."),
    skip_bad_rows: bool = typer.Option(False, "--skip-bad-rows", help="Skip malformed rows and count them."),
) -> None:
    """Convert between CSV and JSONL, slice a time window and rescale the rate. Times in the
    output start at 0 (the first kept row)."""
    from servesim.workload import build_workload
    from servesim.workload.config import WorkloadConfig
    from servesim.workload.traces.writers import write_trace

    cfg = _validated({"trace": {"name": source, "start_s": start_s, "end_s": end_s, "speedup": speedup,
                                "skip_bad_rows": skip_bad_rows}, "num_requests": limit}, WorkloadConfig)
    import numpy as np

    workload = build_workload(cfg, np.random.SeedSequence(0))
    n = write_trace(workload.arrivals(), dest)
    skipped = f" (skipped {workload.skipped_rows:,} bad rows)" if workload.skipped_rows else ""
    typer.echo(f"wrote {n:,} requests to {dest}{skipped}")


@trace_app.command("generate")
@user_errors
def generate(
    scenario: Path = typer.Argument(..., help="Scenario YAML whose `workload:` section to generate."),
    dest: Path = typer.Argument(..., help="Output .csv or .jsonl(.gz) file."),
    set_: list[str] = typer.Option([], "--set", help="Override a key, e.g. --set workload.num_requests=500."),
) -> None:
    """Write the open-loop requests of a scenario's workload: the same ones `servesim run` uses
    (for sessions and agent programs, the first turns and root calls). Closed-loop follow-ups
    depend on the simulation and are not included; as workload.num_requests counts them too, a
    run may start only the first of the requests written."""
    import numpy as np

    from servesim.scenario import load_scenario
    from servesim.workload import build_workload
    from servesim.workload.traces.writers import write_trace

    scn = load_scenario(scenario, set_)
    workload_seed = np.random.SeedSequence(scn.seed).spawn(2)[0]  # as servesim.simulation does
    n = write_trace(build_workload(scn.workload, workload_seed).arrivals(), dest)
    typer.echo(f"wrote {n:,} requests to {dest}")


def _validated(data: dict[str, Any], model: Any) -> Any:
    from pydantic import ValidationError

    from servesim.errors import InputError

    try:
        return model.model_validate({k: v for k, v in data.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InputError(f"{where}: {err['msg']} (got {err.get('input')!r})") from None
