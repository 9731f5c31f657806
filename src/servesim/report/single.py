"""The report for one run: scenario, summary tables, latency CDFs, time series, breakdowns."""

from __future__ import annotations

from typing import Any

import yaml

from servesim.report import figures, series
from servesim.report.fmt import format_value
from servesim.report.html import Page, definition_list, details, table
from servesim.report.load import RunData
from servesim.report.metrics import (
    LATENCIES, LATENCY_STATS, Metric, group_breakdowns, scenario_brief, slo_targets, summary_metrics,
)

CDF_METRICS = ("ttft_s", "tpot_s", "e2e_s")
_GROUP_COLUMNS = {"tenant": "tenant", "SLO class": "slo_class"}


def build_run_page(run: RunData) -> Page:
    """Lay out the whole single-run page."""
    page = Page(f"servesim report — {run.path.name or run.path}", subtitle=str(run.path.resolve()))
    for note in run.notes:
        page.note(note)
    if run.scenario:
        page.heading("Scenario")
        page.raw(definition_list(scenario_brief(run.scenario)))
        page.raw(details("Full resolved scenario", yaml.safe_dump(run.scenario, sort_keys=False)))
    page.heading("Summary")
    page.row([summary_table(summary_metrics(run.summary)), latency_table(run.summary)])
    slos = slo_targets(run.scenario, run.summary)
    if run.requests:
        page.heading("Latency distributions")
        page.figures_grid([
            (figures.latency_cdf(m, [("all requests", series.latency_values(run, m))], slos.get(m)), m)
            for m in CDF_METRICS if m in run.requests])
    cluster = run.summary.get("cluster")
    if cluster and cluster.get("per_replica"):
        page.heading("Replicas")
        page.figure(figures.replica_load(cluster["per_replica"]), "replicas")
    if run.timeseries:
        page.heading("Over time")
        page.figure(figures.timeseries([("run", run.timeseries)]), "timeseries")
    if isinstance(run.summary.get("elastic"), dict):
        page.heading("Elastic cluster: replicas, power and cost")
        page.raw(definition_list([(k, _plain(v)) for k, v in run.summary["elastic"].items()]))
        if "num_replicas" in run.timeseries and "power_w" in run.timeseries:
            page.figure(figures.elastic(run.timeseries, run.scale_events), "elastic")
    for noun, groups in group_breakdowns(run.summary):
        page.heading(f"By {noun}")
        page.raw(group_table(noun, groups))
        column = _GROUP_COLUMNS[noun]
        masks = series.group_masks(run, column)
        if masks:
            data = [(name, {m: series.latency_values(run, m, mask) for m in CDF_METRICS})
                    for name, mask in masks.items()]
            page.figure(figures.group_cdfs(noun, data, slos), f"by-{column}")
    return page


def _plain(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else "-" if v is None else str(v)


def summary_table(metrics: list[Metric]) -> str:
    """Every non-latency metric, grouped into sections (latencies get their own table)."""
    grouped: dict[str, list[Metric]] = {}
    for metric in metrics:
        if metric.section != "Latency":
            grouped.setdefault(metric.section, []).append(metric)
    rows, sections = [], {}
    for section, members in grouped.items():
        sections[len(rows)] = section
        rows += [[m.label, format_value(m.value, m.kind)] for m in members]
    return table(["Metric", "Value"], rows, sections)


def latency_table(summary: dict[str, Any]) -> str:
    """Rows TTFT/TPOT/ITL/E2E, columns mean..max, in milliseconds; empty if no latencies."""
    present = [(key, name) for key, name in LATENCIES if isinstance(summary.get(key), dict)]
    if not present:
        return ""
    stats = [s for s in LATENCY_STATS if any(s in summary[key] for key, _ in present)]
    rows = [[name] + [format_value(summary[key].get(s), "ms") for s in stats] for key, name in present]
    return table(["Latency"] + stats, rows)


def group_table(noun: str, groups: dict[str, dict[str, Any]]) -> str:
    """One row per tenant / SLO class with counts, p50/p99 latencies, throughput, attainment."""
    header = [noun[:1].upper() + noun[1:], "Requests"]
    latency_cols = [(k, n, s) for k, n in LATENCIES if k != "itl_s"
                    for s in ("p50", "p99") if any(isinstance(g.get(k), dict) for g in groups.values())]
    header += [f"{n} {s}" for _, n, s in latency_cols]
    has_tput = any("output_tokens_per_s" in g for g in groups.values())
    has_slo = any("slo_attainment" in g for g in groups.values())
    header += ["Output tokens/s"] * has_tput + ["SLO attainment"] * has_slo
    rows = []
    for name, g in groups.items():
        row = [name, format_value(g.get("num_requests"), "count")]
        row += [format_value((g.get(k) or {}).get(s), "ms") for k, _, s in latency_cols]
        row += [format_value(g.get("output_tokens_per_s"), "plain")] * has_tput
        row += [format_value(g.get("slo_attainment"), "pct")] * has_slo
        rows.append(row)
    return table(header, rows)
