"""Plotly figures for reports. Inputs are plain arrays in seconds; plots show milliseconds."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from servesim.report import series

COLORS = qualitative.Plotly
LATENCY_NAMES = {"ttft_s": "TTFT", "tpot_s": "TPOT", "itl_s": "ITL", "e2e_s": "E2E"}
LATENCY_TITLES = {
    "ttft_s": "Time to first token (TTFT)",
    "tpot_s": "Time per output token (TPOT)",
    "e2e_s": "End-to-end latency (E2E)",
}
SLO_COLOR = "#d62728"


def _base_layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.01, "xanchor": "left"},
        template="plotly_white",
        height=height,
        margin={"l": 70, "r": 30, "t": 90, "b": 60},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0.0},
        hovermode="closest",
    )
    return fig


def _cdf_trace(name: str, values_s: np.ndarray, color: str, group: str | None = None,
               show_legend: bool = True) -> go.Scatter:
    x, y = series.cdf_points(values_s)
    return go.Scatter(
        x=x * 1000.0, y=y, name=name, mode="lines", line={"color": color, "width": 2},
        legendgroup=group or name, showlegend=show_legend,
        hovertemplate=f"{name}<br>%{{x:.1f}} ms<br>%{{y:.1%}} of requests<extra></extra>",
    )


def _slo_line(fig: go.Figure, metric: str, slo_s: float, row: int | None = None,
              col: int | None = None) -> None:
    label = f"{LATENCY_NAMES.get(metric, metric)} SLO {slo_s * 1000.0:g} ms"
    fig.add_vline(x=slo_s * 1000.0, line={"color": SLO_COLOR, "dash": "dash", "width": 2},
                  annotation={"text": label, "font": {"color": SLO_COLOR}},
                  annotation_position="bottom right", row=row, col=col)


def latency_cdf(metric: str, runs: Sequence[tuple[str, np.ndarray]],
                slo_s: float | None = None) -> go.Figure:
    """CDF of one latency metric, one curve per (label, values in seconds), with its SLO line."""
    fig = go.Figure()
    for i, (label, values) in enumerate(runs):
        fig.add_trace(_cdf_trace(label, values, COLORS[i % len(COLORS)]))
    title = LATENCY_TITLES.get(metric, metric)
    if slo_s is not None:
        _slo_line(fig, metric, slo_s)
        shares = [series.share_within(v, slo_s) for _, v in runs]
        within = ", ".join(f"{label}: {s:.1%}" if len(runs) > 1 else f"{s:.1%}"
                           for (label, _), s in zip(runs, shares) if not math.isnan(s))
        if within:
            title += f"<br><sup>within SLO — {within}</sup>"
    fig.update_layout(showlegend=len(runs) > 1)
    fig.update_xaxes(title_text=f"{LATENCY_NAMES.get(metric, metric)} (ms)", rangemode="tozero")
    fig.update_yaxes(title_text="Fraction of finished requests", range=[0, 1.02], tickformat=".0%")
    return _base_layout(fig, title, height=420)


def group_cdfs(noun: str, groups: Sequence[tuple[str, dict[str, np.ndarray]]],
               slos: dict[str, float]) -> go.Figure:
    """TTFT / TPOT / E2E CDFs side by side, one curve per group (tenant or SLO class)."""
    metrics = [m for m in ("ttft_s", "tpot_s", "e2e_s") if any(len(g.get(m, ())) for _, g in groups)]
    fig = make_subplots(rows=1, cols=max(len(metrics), 1), horizontal_spacing=0.06,
                        subplot_titles=[LATENCY_NAMES[m] for m in metrics])
    for col, metric in enumerate(metrics, start=1):
        for i, (name, values) in enumerate(groups):
            fig.add_trace(_cdf_trace(name, values.get(metric, np.empty(0)), COLORS[i % len(COLORS)],
                                     group=name, show_legend=col == 1), row=1, col=col)
        if metric in slos:
            _slo_line(fig, metric, slos[metric], row=1, col=col)
        fig.update_xaxes(title_text=f"{LATENCY_NAMES[metric]} (ms)", rangemode="tozero", row=1, col=col)
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
    fig.update_yaxes(title_text="Fraction of finished requests", row=1, col=1)
    return _base_layout(fig, f"Latency by {noun}", height=420)


_PANELS = (
    ("Request rate", "requests/s"),
    ("Token throughput", "tokens/s"),
    ("Requests in the system", "requests"),
    ("KV-cache usage", "% of GPU blocks"),
)


def timeseries(runs: Sequence[tuple[str, dict[str, np.ndarray]]]) -> go.Figure:
    """Four stacked panels over simulated time: request rates, token rates, queue, KV usage."""
    fig = make_subplots(rows=4, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=[title for title, _ in _PANELS])
    several = len(runs) > 1
    widths = []
    for i, (label, raw) in enumerate(runs):
        ts = series.rebin_timeseries(raw)
        if len(ts.get("interval_s", ())):
            widths.append(float(np.median(ts["interval_s"])))
        color = COLORS[i % len(COLORS)]
        lines = (
            (1, "arrival rate", series.rate(ts, "arrivals"), "solid", "req/s"),
            (1, "completion rate", series.rate(ts, "finished"), "dot", "req/s"),
            (2, "output tokens", series.rate(ts, "output_tokens"), "solid", "tok/s"),
            (2, "prefill tokens", series.rate(ts, "prompt_tokens"), "dot", "tok/s"),
            (3, "running", ts.get("num_running"), "solid", "requests"),
            (3, "waiting", ts.get("num_waiting"), "dot", "requests"),
            (4, "KV usage", None if "kv_usage" not in ts else ts["kv_usage"] * 100.0, "solid", "%"),
        )
        for j, (row, what, y, dash, unit) in enumerate(lines):
            if y is None:
                continue
            name = f"{label}: {what}" if several else what
            line_color = color if several else COLORS[(row - 1 + (dash == "dot") * 4) % len(COLORS)]
            fig.add_trace(go.Scatter(
                x=ts["time_s"], y=y, name=name, mode="lines", line_shape="hv",
                line={"color": line_color, "dash": dash, "width": 1.6},
                legendgroup=label if several else name,
                hovertemplate=f"{name}<br>t=%{{x:.1f}} s<br>%{{y:.2f}} {unit}<extra></extra>",
            ), row=row, col=1)
    for row, (_, unit) in enumerate(_PANELS, start=1):
        fig.update_yaxes(title_text=unit, rangemode="tozero", row=row, col=1)
    fig.update_yaxes(range=[0, 100], row=4, col=1)
    fig.update_xaxes(title_text="Simulated time (s)", row=4, col=1)
    title = "Over time" + (f" (means over {max(widths):g} s intervals)" if widths else "")
    fig = _base_layout(fig, title, height=1000)
    fig.update_layout(hovermode="x unified")
    if several:  # one entry per run and quantity: a side legend keeps the panels readable
        fig.update_layout(legend={"orientation": "v", "yanchor": "top", "y": 1.0, "x": 1.02},
                          margin={"r": 200})
    return fig


def differences(labels: Sequence[str], rows: Sequence[tuple[str, Sequence[float | None]]]) -> go.Figure:
    """Horizontal bars: relative change of each metric for each run against the first run.

    Bars are labelled with their value; when one change dwarfs the rest the axis is capped at
    +300% so the small ones stay visible (the labels still give the true numbers).
    """
    fig = go.Figure()
    names = [name for name, _ in rows]
    extremes = [0.0]
    for i, label in enumerate(labels[1:]):
        values = [None if changes[i] is None else changes[i] * 100.0 for _, changes in rows]
        extremes += [v for v in values if v is not None]
        fig.add_trace(go.Bar(
            y=names, x=values, orientation="h", name=label, marker_color=COLORS[(i + 1) % len(COLORS)],
            text=[None if v is None else f"{v:+.1f}%" for v in values],
            textposition=["inside" if v is not None and v > 300 else "outside" for v in values],
            cliponaxis=True, hovertemplate=f"{label}<br>%{{y}}: %{{x:+.1f}}%<extra></extra>",
        ))
    low, high = min(extremes), max(extremes)
    if high > 300:
        fig.update_xaxes(range=[min(low, 0) * 1.15 - 10, 300])
    fig.add_vline(x=0, line={"color": "#444", "width": 1})
    fig.update_xaxes(title_text=f"Change against {labels[0]} (%)", zeroline=True)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(barmode="group", uniformtext={"minsize": 9, "mode": "show"})
    height = max(360, 70 + 30 * len(rows) * max(1, len(labels) - 1))
    return _base_layout(fig, f"Differences against {labels[0]}", height=height)


def replica_load(per_replica: Sequence[dict]) -> go.Figure:
    """Per replica: requests dispatched, busy share and time-averaged running / waiting requests
    (how evenly the router spread the load)."""
    names = [f"{i} ({r['pool']})" for i, r in enumerate(per_replica)]
    fig = make_subplots(rows=1, cols=3, subplot_titles=("Requests dispatched", "Busy share (%)",
                                                        "Mean running + waiting"))
    fig.add_trace(go.Bar(x=names, y=[r["num_dispatched"] for r in per_replica], marker_color=COLORS[0],
                         name="dispatched", showlegend=False), row=1, col=1)
    fig.add_trace(go.Bar(x=names, y=[100 * r["busy_share"] for r in per_replica], marker_color=COLORS[1],
                         name="busy", showlegend=False), row=1, col=2)
    for j, key in enumerate(("mean_running", "mean_waiting")):
        fig.add_trace(go.Bar(x=names, y=[r[key] for r in per_replica], name=key.split("_")[1],
                             marker_color=COLORS[2 + j]), row=1, col=3)
    fig.update_layout(barmode="stack")
    fig.update_xaxes(title_text="replica")
    return _base_layout(fig, "Load per replica", height=420)


def elastic(ts: dict[str, np.ndarray], events: dict[str, np.ndarray] | None = None) -> go.Figure:
    """Replicas up and row power over simulated time (elastic or power-managed runs); with
    `events` (scale_events.csv) of several pools, each pool's replicas ready or starting at its
    decisions beside the total."""
    ts = series.rebin_timeseries(ts)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=["Replicas up", "Power draw"])
    for row, (col, unit) in enumerate((("num_replicas", "replicas"), ("power_w", "W")), start=1):
        fig.add_trace(go.Scatter(x=ts["time_s"], y=ts[col], name=col, mode="lines", line_shape="hv",
                                 line={"color": COLORS[row - 1], "width": 1.6},
                                 hovertemplate=f"t=%{{x:.1f}} s<br>%{{y:.2f}} {unit}<extra></extra>"), row=row, col=1)
        fig.update_yaxes(title_text=unit, rangemode="tozero", row=row, col=1)
    pools = sorted(set(events["pool"])) if events and "pool" in events else []
    for j, pool in enumerate(pools if len(pools) > 1 else []):
        mine = events["pool"] == pool
        fig.add_trace(go.Scatter(x=events["time_s"][mine], y=(events["num_ready"] + events["num_starting"])[mine],
                                 name=f"pool {pool}", mode="lines", line_shape="hv",
                                 line={"color": COLORS[(2 + j) % len(COLORS)], "width": 1.2, "dash": "dot"},
                                 hovertemplate=f"t=%{{x:.1f}} s<br>%{{y:.0f}} replicas of {pool}<extra></extra>"),
                      row=1, col=1)
    fig.update_xaxes(title_text="Simulated time (s)", row=2, col=1)
    return _base_layout(fig, "Elastic cluster", height=500)
