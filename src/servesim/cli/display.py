"""Terminal display: a progress bar for long runs and the end-of-run summary table."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from servesim.cli import terminate


@contextlib.contextmanager
def live_bar(label: str, enabled: bool = True) -> Iterator:
    """Yields `update(done, total, note)`: a bar on stderr that disappears when done, drawn only on
    a terminal. Either way each update is a point where a swallowed SIGTERM exits (terminate.py)."""
    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield lambda done, total, note: terminate.check()
        return
    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[note]}"),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task(label, total=None, note="")

        def update(done, total, note) -> None:
            terminate.check()
            bar.update(task, completed=done, total=total, note=note)

        yield update


@contextlib.contextmanager
def progress_bar(enabled: bool = True) -> Iterator:
    """Yields a `progress(done, total, sim_time_s)` callback; the bar appears only on a terminal."""
    with live_bar("simulating", enabled) as update:
        yield lambda done, total, sim_time_s: update(done, total, f"t={sim_time_s:,.0f}s simulated")


def _ms(stats: dict) -> list[str]:
    return ["-" if stats.get(k) is None else f"{1e3 * stats[k]:,.1f}" for k in ("mean", "p50", "p90", "p99")]


def summary_table(summary: dict, scenario, out_dir: Path) -> None:
    console = Console()
    t = Table(title=_title(scenario))
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
    if "cluster" in summary:
        lines += _cluster_lines(summary["cluster"])
    lines += _control_lines(summary)
    lines.append(f"simulated {summary['simulated_time_s']:,.1f} s in {summary['wall_time_s']:.2f} s wall; "
                 f"results in {out_dir}/")
    for line in lines:
        console.print(line)


def _title(scenario) -> str:
    if scenario.pools:
        pools = ", ".join(f"{p.name}: {p.replicas} x {p.model or scenario.model} on {p.tp or scenario.tp} x "
                          f"{p.gpu or scenario.gpu}" for p in scenario.pools)
        return f"{pools}; router {scenario.router.name}"
    many = f"{scenario.replicas} replicas of " if scenario.replicas > 1 else ""
    router = f", router {scenario.router.name}" if scenario.replicas > 1 else ""
    return f"{many}{scenario.model} on {scenario.tp} x {scenario.gpu}, scheduler {scenario.scheduler.name}{router}"


def _control_lines(summary: dict) -> list[str]:
    """A line each for what the autoscaler (or power manager), the KV transfers of prefill/decode
    pools and live migration did: the summary's `elastic`, `disaggregation`, `migration`."""
    lines = []
    if (e := summary.get("elastic")) is not None:
        if e["autoscaler"]:
            n = e["num_cold_starts"]
            lines.append(f"autoscaler {e['autoscaler']}: {e['num_scale_ups']:,} up, {e['num_scale_downs']:,} down of "
                         f"{e['num_decisions']:,} decisions, {n:,} cold start{'' if n == 1 else 's'}"
                         + (f" ({e['cold_start_s']:.1f} s)" if n else ""))
        per_m = e["usd_per_million_output_tokens"]
        lines.append(f"cost: {e['gpu_hours']:,.2f} GPU-hours, {e['energy_kwh']:,.2f} kWh, ${e['cost_usd']:,.2f}"
                     + (f" (${per_m:,.2f} per million output tokens)" if per_m is not None else ""))
    if (d := summary.get("disaggregation")) is not None:
        wait = d["transfer_wait_s"]["mean"]
        lines.append(f"prefill/decode: {d['num_transfers']:,} KV transfers ({d['kv_bytes'] / 1e9:,.1f} GB"
                     + (f", {1e3 * wait:,.1f} ms mean wait" if wait is not None else "")
                     + f"), {d['num_local_prefills']:,} local prefills")
    if (m := summary.get("migration")) is not None:
        done, down = m["num_migrations"], m["downtime_s"]["p99"]
        lines.append(f"migration: {done:,} done, {m['num_aborted']:,} aborted, {m['copied_blocks']:,} blocks copied"
                     + (f", downtime p99 {1e3 * down:,.2f} ms" if done and down is not None else ""))
    return lines


def _cluster_lines(c: dict) -> list[str]:
    lines = [f"cluster: {c['num_replicas']} replicas; load imbalance (max/mean) {c['load_imbalance']:.2f}; "
             f"re-routed {c['num_rerouted']:,}; failed {c['num_failed']:,}"]
    for name, p in c["per_pool"].items():
        lines.append(f"  pool {name}: {p['num_replicas']} replicas, {p['num_dispatched']:,} dispatched, "
                     f"busy {p['busy_share']:.0%}, {p['output_tokens_per_s']:,.0f} output tok/s, "
                     f"{p['num_crashes']} crashes")
    for reason, n in c["reject_reasons"].items():  # (rejected and failed alike: ended before any replica took them)
        lines.append(f"  not served: {n:,} ({reason})")
    return lines
