"""The comparison report: runs side by side, differences against the first, overlaid plots."""

from __future__ import annotations

import html
from collections.abc import Sequence

from servesim.report import figures, series
from servesim.report.fmt import format_delta, format_value, relative_change
from servesim.report.html import Markup, Page, table
from servesim.report.load import RunData
from servesim.report.metrics import (
    GROUP_SECTIONS, Metric, one_line, scenario_brief, slo_targets, summary_metrics,
)
from servesim.report.single import CDF_METRICS

#: Metrics drawn in the differences chart, when present in the first run.
KEY_METRICS = (
    "ttft_s.p50", "ttft_s.p99", "tpot_s.p50", "tpot_s.p99", "e2e_s.p50", "e2e_s.p99",
    "throughput.requests_per_s", "throughput.output_tokens_per_s", "goodput_requests_per_s",
    "slo_attainment",
)


def unique_labels(runs: Sequence[RunData], labels: Sequence[str] | None) -> list[str]:
    """Given labels, or folder names made unique with a numeric suffix."""
    if labels is not None:
        return [str(label) for label in labels]
    out: list[str] = []
    for run in runs:
        base = run.path.resolve().name or str(run.path)
        name, n = base, 2
        while name in out:
            name, n = f"{base} ({n})", n + 1
        out.append(name)
    return out


def build_comparison_page(runs: Sequence[RunData], labels: Sequence[str]) -> Page:
    """Lay out the whole comparison page; differences are against `runs[0]`."""
    page = Page(f"servesim comparison — {len(runs)} runs", subtitle=f"Baseline: {labels[0]}")
    for label, run in zip(labels, runs):
        for note in run.notes:
            page.note(f"{label}: {note}")
    page.heading("Runs")
    page.raw(runs_table(runs, labels))
    per_run = [summary_metrics(run.summary) for run in runs]
    page.heading("Metrics side by side")
    page.raw(metrics_table(per_run, labels))
    rows = difference_rows(per_run)
    if rows and len(runs) > 1:
        page.figure(figures.differences(labels, rows), "differences")
    slos = slo_targets(runs[0].scenario, runs[0].summary)
    if any(run.requests for run in runs):
        page.heading("Latency distributions")
        if any(slo_targets(run.scenario, run.summary) != slos for run in runs[1:]):
            page.note(f"The runs have different SLOs; lines show {labels[0]}'s.")
        page.figures_grid([
            (figures.latency_cdf(m, [(label, series.latency_values(run, m))
                                     for label, run in zip(labels, runs) if m in run.requests],
                                 slos.get(m)), m)
            for m in CDF_METRICS if any(m in run.requests for run in runs)])
    with_ts = [(label, run.timeseries) for label, run in zip(labels, runs) if run.timeseries]
    if with_ts:
        page.heading("Over time")
        page.figure(figures.timeseries(with_ts), "timeseries")
    for key, noun in GROUP_SECTIONS:
        if any(isinstance(run.summary.get(key), dict) for run in runs):
            page.heading(f"By {noun}")
            page.raw(group_comparison_table(key, noun, runs, labels))
    return page


def runs_table(runs: Sequence[RunData], labels: Sequence[str]) -> str:
    rows = []
    for label, run in zip(labels, runs):
        brief = dict(scenario_brief(run.scenario))
        rows.append([label, str(run.path), brief.get("Model", "–"), brief.get("GPU", "–"),
                     brief.get("Scheduler", "–"), one_line(brief.get("Workload", "–"), 70)])
    return table(["Run", "Folder", "Model", "GPU", "Scheduler", "Workload"], rows)


def metrics_table(per_run: Sequence[list[Metric]], labels: Sequence[str]) -> str:
    """Union of all runs' metrics, in first-seen order; later runs show their change vs the first."""
    order: dict[str, Metric] = {}
    for metrics in per_run:
        for metric in metrics:
            order.setdefault(metric.key, metric)
    values = [{m.key: m.value for m in metrics} for metrics in per_run]
    grouped: dict[str, list[Metric]] = {}
    for metric in order.values():
        grouped.setdefault(metric.section, []).append(metric)
    rows, sections = [], {}
    for section, members in grouped.items():
        sections[len(rows)] = section
        for metric in members:
            base = values[0].get(metric.key)
            row = [metric.label, format_value(base, metric.kind)]
            row += [_cell_with_delta(metric, base, v.get(metric.key)) for v in values[1:]]
            rows.append(row)
    return table(["Metric"] + list(labels), rows, sections)


def _cell_with_delta(metric: Metric, base: object, value: object) -> Markup:
    text = html.escape(format_value(value, metric.kind))
    delta = format_delta(base, value, metric.kind)
    if not delta:
        return Markup(text)
    change = relative_change(base, value) if metric.kind != "pct" else (
        None if base is None or value is None else value - base)  # type: ignore[operator]
    css = ""
    if metric.better and change:
        css = "better" if change * metric.better > 0 else "worse"
    return Markup(f'{text}<span class="delta {css}">({html.escape(delta)})</span>')


def difference_rows(per_run: Sequence[list[Metric]]) -> list[tuple[str, list[float | None]]]:
    """(label, [relative change of run i against run 0 for i >= 1]) for the key metrics."""
    values = [{m.key: m for m in metrics} for metrics in per_run]
    rows = []
    for key in KEY_METRICS:
        base = values[0].get(key)
        if base is None:
            continue
        changes = [relative_change(base.value, v[key].value) if key in v else None for v in values[1:]]
        if any(c is not None for c in changes):
            rows.append((base.label, changes))
    return rows


def group_comparison_table(key: str, noun: str, runs: Sequence[RunData], labels: Sequence[str]) -> str:
    """Per group (tenant / SLO class): TTFT p99, E2E p99 and SLO attainment for each run."""
    names: list[str] = []
    for run in runs:
        for name in (run.summary.get(key) or {}):
            if str(name) not in names:
                names.append(str(name))
    header = [noun[:1].upper() + noun[1:]]
    cols = (("ttft_s", "p99", "TTFT p99", "ms"), ("e2e_s", "p99", "E2E p99", "ms"),
            ("slo_attainment", None, "SLO att.", "pct"))
    header += [f"{title} · {label}" for _, _, title, _ in cols for label in labels]
    rows = []
    for name in names:
        row = [name]
        for metric, stat, _, kind in cols:
            for run in runs:
                group = {str(k): v for k, v in (run.summary.get(key) or {}).items()}.get(name) or {}
                value = group.get(metric)
                if stat is not None:
                    value = value.get(stat) if isinstance(value, dict) else None
                row.append(format_value(value, kind))
        rows.append(row)
    return table(header, rows)
