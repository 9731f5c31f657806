"""Terminal display: a progress bar for long runs and the end-of-run summary table."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


@contextlib.contextmanager
def progress_bar(enabled: bool = True) -> Iterator:
    """Yields a `progress(done, total, sim_time_s)` callback; the bar appears only on a terminal."""
    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield None
        return
    with Progress(TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[sim]}"),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("run", total=None, sim="")

        def update(done: int, total: int | None, sim_time_s: float) -> None:
            bar.update(task, completed=done, total=total, sim=f"t={sim_time_s:,.0f}s simulated")

        yield update


def _ms(stats: dict) -> list[str]:
    return ["-" if stats.get(k) is None else f"{1e3 * stats[k]:,.1f}" for k in ("mean", "p50", "p90", "p99")]


def summary_table(summary: dict, scenario, out_dir: Path) -> None:
    console = Console()
    t = Table(title=f"{scenario.model} on {scenario.tp} x {scenario.gpu}, scheduler {scenario.scheduler.name}")
    t.add_column("latency (ms)")
    for col in ("mean", "p50", "p90", "p99"):
        t.add_column(col, justify="right")
    for key, label in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("itl_s", "ITL"), ("e2e_s", "E2E")):
        t.add_row(label, *_ms(summary[key]))
    console.print(t)
    thr = summary["throughput"]
    lines = [
        f"requests: {summary['num_requests']:,} ({summary['num_finished']:,} finished, "
        f"{summary['num_rejected']:,} rejected, {summary['num_dropped']:,} dropped)",
        f"throughput: {thr['requests_per_s']:.2f} req/s, {thr['input_tokens_per_s']:,.0f} input tok/s, "
        f"{thr['output_tokens_per_s']:,.0f} output tok/s",
        f"preemptions: {summary['num_preemptions']:,}; prefix-cache hit rate: {summary['prefix_cache_hit_rate']:.1%}",
    ]
    if "slo_attainment" in summary:
        lines.append(f"SLO attainment: {summary['slo_attainment']:.1%}; goodput "
                     f"{summary['goodput_requests_per_s']:.2f} req/s")
    lines.append(f"simulated {summary['simulated_time_s']:,.1f} s in {summary['wall_time_s']:.2f} s wall; "
                 f"results in {out_dir}/")
    for line in lines:
        console.print(line)
