"""The plan's HTML report: the pick, the Pareto front of cost vs latency, the ranked table."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from servesim.planner.search import SearchResult
from servesim.report.html import Page, definition_list, table

SHOWN = ("rank", "candidate", "status", "goodput_per_s", "replicas", "gpus", "cost_usd_h", "goodput_per_gpu",
         "ttft_p90_s", "tpot_p90_s", "static_capacity_per_s", "probes")


def pareto(points: list[tuple[float, float, int]]) -> list[int]:
    """Indices of the points no other point beats on both x and y (lower is better), by x."""
    front, best_y = [], float("inf")
    for x, y, i in sorted(points):
        if y < best_y:
            front.append(i)
            best_y = y
    return front


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def _front_figure(table_rows: list[dict], x_key: str, x_title: str, y_key: str, y_title: str) -> go.Figure:
    pts = [(r[x_key], r[y_key], i) for i, r in enumerate(table_rows)
           if r["status"] == "ok" and r[x_key] is not None and r[y_key] is not None]
    sign = -1.0 if x_key == "goodput_per_gpu" else 1.0  # more goodput per GPU is better
    front = set(pareto([(sign * x, y, i) for x, y, i in pts]))
    fig = go.Figure()
    for on_front, name, size in ((False, "candidate", 8), (True, "Pareto front", 12)):
        sel = sorted((p for p in pts if (p[2] in front) == on_front), key=lambda p: p[0])
        fig.add_trace(go.Scatter(x=[p[0] for p in sel], y=[p[1] for p in sel], name=name,
                                 mode="markers+lines" if on_front else "markers", marker={"size": size},
                                 text=[table_rows[p[2]]["candidate"] for p in sel],
                                 hovertemplate="%{text}<br>%{x:.3g}, %{y:.4f} s<extra></extra>"))
    fig.update_layout(xaxis_title=x_title, yaxis_title=y_title, height=420, margin={"t": 30})
    return fig


def write_report(result: SearchResult, table_rows: list[dict], mix=None) -> str:
    best = result.best
    page = Page("servesim plan", f"{len(table_rows)} candidates, {result.counters.probes_run} simulations "
                                 f"({result.counters.probes_cached} cached) in {result.wall_s:.1f} s")
    facts = [("best", best.cand.label if best else "no candidate meets the SLO at the traffic")]
    if best:
        facts += [("deployment", f"{best.replicas} replica(s), {best.gpus} GPUs"
                   + (f", ${best.cost_usd_h:,.2f}/h" if best.cost_usd_h else "")),
                  ("goodput", f"{best.capacity_per_s:.2f} req/s ({best.per_gpu:.2f} per GPU)")]
    if result.static_pick:
        sp = result.static_pick
        facts.append(("static pick (no queueing, TTFT x 1.8)", f"{sp.cand.label}, {sp.replicas} replica(s)"))
    page.raw(definition_list(facts))
    page.heading("Pareto front")
    page.figures_grid([
        (_front_figure(table_rows, "cost_usd_h", "cost, $/h", "tpot_p90_s", "TPOT p90 at goodput, s"), "pareto-cost"),
        (_front_figure(table_rows, "goodput_per_gpu", "goodput per GPU, req/s", "tpot_p90_s",
                       "TPOT p90 at goodput, s"), "pareto-goodput"),
    ])
    page.heading("Candidates")
    page.raw(table(SHOWN, [[_fmt(r[k]) for k in SHOWN] for r in table_rows]))
    if mix is not None and mix.cost_usd_h is not None:
        page.heading("Heterogeneous mix")
        rows = [[t, str(n), _fmt(mix.verified.get(t))] for t, n in mix.counts.items()]
        page.raw(table(("type", "replicas", "simulated SLO attainment"), rows))
    return page.render()
