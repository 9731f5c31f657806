"""Terminal display of a plan: a progress bar over candidates and the ranked table."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import typer
from rich.console import Console
from rich.table import Table

from servesim.cli.display import live_bar

TOP = 10


@contextlib.contextmanager
def search_progress(enabled: bool = True) -> Iterator:
    """Yields `update(done, total, counters)` for the search (a bar only on a terminal)."""
    with live_bar("planning", enabled) as update:
        yield lambda done, total, c: update(done, total, f"{c.probes_run} simulated, {c.probes_cached} cached")


def _f(v, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def print_outcome(outcome, out_dir: Path) -> None:
    from servesim.planner.output import rows

    result = outcome.search
    console = Console()
    table = Table(title=f"servesim plan: top {TOP} of {len(result.ranked)} candidates")
    for col in ("#", "candidate", "status", "goodput req/s", "replicas", "GPUs", "$/h", "per GPU", "TPOT p90 s"):
        table.add_column(col, justify="left" if col in ("candidate", "status") else "right",
                         no_wrap=col == "candidate", min_width=24 if col == "candidate" else None)
    for r in rows(result)[:TOP]:
        table.add_row(_f(r["rank"], "d"), r["candidate"], r["status"], _f(r["goodput_per_s"]), _f(r["replicas"], "d"),
                      _f(r["gpus"], "d"), _f(r["cost_usd_h"]), _f(r["goodput_per_gpu"]), _f(r["tpot_p90_s"], ".4f"))
    console.print(table)
    best = result.best
    if best is None:
        simulated = [e for e in result.ranked if e.goodput is not None and not e.goodput.pruned]
        closest = sorted(simulated, key=lambda e: -e.capacity_per_s)[:3]
        names = "; ".join(f"{e.cand.label} ({e.capacity_per_s:.2f} req/s)" for e in closest) or "none simulated"
        typer.echo(f"no candidate meets the SLO at the traffic; closest: {names}")
    else:
        typer.echo(f"best: {best.cand.label}: {best.replicas} replica(s), {best.gpus} GPUs"
                      + (f", ${best.cost_usd_h:,.2f}/h" if best.cost_usd_h else "")
                      + f", goodput {best.capacity_per_s:.2f} req/s")
    if result.static_pick is not None:
        sp = result.static_pick
        check = result.static_pick_check
        typer.echo(f"static pick (no queueing, TTFT x 1.8): {sp.cand.label}, {sp.replicas} replica(s)"
                   + (f", ${sp.cost_usd_h:,.2f}/h" if sp.cost_usd_h else "")
                   + (f"; simulated at the traffic it attains {check['slo_attainment']:.1%}" if check else ""))
    mix = outcome.mix
    if mix is not None:
        if mix.cost_usd_h is None:
            typer.echo("mix: no feasible mix (some bucket fits no candidate)")
        else:
            single = f"; best single type {mix.best_single[0]} ${mix.best_single[2]:,.2f}/h" if mix.best_single else ""
            typer.echo(f"mix: {mix.counts}, ${mix.cost_usd_h:,.2f}/h{single}; simulated attainment "
                          + ", ".join(f"{k} {v:.1%}" for k, v in mix.verified.items()))
    c = result.counters
    typer.echo(f"{c.probes_run} simulations ({c.probes_cached} cached) in {result.wall_s:.1f} s; "
                  f"results in {out_dir}/ ({', '.join(outcome.files)})")
