"""Assemble a self-contained HTML page: one inline copy of plotly.js, then tables and plots.

The page loads nothing from the network, so it works offline and can be mailed or archived.
All user-controlled text (labels, tenant names, scenario values) goes through `html.escape`;
plotly's own JSON encoder escapes `<`, `>` and `/` inside the figure scripts.
"""

from __future__ import annotations

import html
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

_PLOT_CONFIG = {"displaylogo": False, "responsive": True,
                "toImageButtonOptions": {"format": "png", "scale": 2}}

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: #222; background: #f6f7f9; }
main { max-width: 1320px; margin: 0 auto; padding: 16px 28px 48px; }
h1 { font-size: 1.6rem; margin: 12px 0 4px; }
h2 { font-size: 1.2rem; margin: 28px 0 8px; border-bottom: 1px solid #d8dce3; padding-bottom: 4px; }
.sub { color: #666; margin: 0 0 12px; }
.card { background: #fff; border: 1px solid #e1e4ea; border-radius: 6px; padding: 8px 12px;
        margin: 10px 0; }
.plot { min-height: 360px; }
.grid { display: grid; gap: 12px; }
@media (max-width: 1000px) { .grid { grid-template-columns: 1fr !important; } }
.grid > * { min-width: 0; overflow: hidden; }
.row { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
.row > .card { margin: 0; }
table { border-collapse: collapse; font-size: 0.9rem; }
th, td { padding: 4px 10px; text-align: right; border-bottom: 1px solid #eceef2; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f0f2f5; }
tr.section td { background: #fafbfc; font-weight: 600; text-align: left; color: #555; }
dl.brief { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 4px 0; }
dl.brief dt { font-weight: 600; } dl.brief dd { margin: 0; overflow-wrap: anywhere; }
.better { color: #1a7f37; } .worse { color: #c62828; } .delta { font-size: 0.8rem; margin-left: 4px; }
.note { color: #8a6d00; }
.scroll { overflow-x: auto; }
details summary { cursor: pointer; color: #444; } pre { font-size: 0.8rem; max-height: 480px; overflow: auto; }
"""


class Page:
    """An HTML document built from headings, tables and plotly figures, in order."""

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title = title
        self.subtitle = subtitle
        self._parts: list[str] = []
        self._num_plots = 0

    def heading(self, text: str) -> None:
        self._parts.append(f"<h2>{html.escape(text)}</h2>")

    def raw(self, markup: str) -> None:
        """Add trusted markup (built by this package with escaped values)."""
        self._parts.append(markup)

    def row(self, parts: Sequence[str]) -> None:
        """Put trusted markup blocks (e.g. tables) next to each other, wrapping when narrow."""
        self._parts.append(f'<div class="row">{"".join(parts)}</div>')

    def note(self, text: str) -> None:
        self._parts.append(f'<p class="note">{html.escape(text)}</p>')

    def figure(self, fig: go.Figure, name: str) -> None:
        """Add a plot; `name` ends up in the container's `data-plot` attribute (tests use it)."""
        self._parts.append(self._figure_markup(fig, name))

    def figures_grid(self, figs: Sequence[tuple[go.Figure, str]]) -> None:
        # A fixed column count (not auto-fit) so that each plot, drawn while the page is still
        # being parsed, already knows its final width.
        inner = "".join(self._figure_markup(fig, name) for fig, name in figs)
        style = f"grid-template-columns: repeat({max(len(figs), 1)}, minmax(0, 1fr))"
        self._parts.append(f'<div class="grid" style="{style}">{inner}</div>')

    def _figure_markup(self, fig: go.Figure, name: str) -> str:
        self._num_plots += 1
        div_id = f"plot-{self._num_plots}-{re.sub(r'[^A-Za-z0-9_-]', '-', name)}"
        body = fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                           config=_PLOT_CONFIG)
        return f'<div class="card plot" data-plot="{html.escape(name)}">{body}</div>'

    def render(self) -> str:
        subtitle = f'<p class="sub">{html.escape(self.subtitle)}</p>' if self.subtitle else ""
        return (
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(self.title)}</title>\n<style>{_CSS}</style>\n"
            f"<script type=\"text/javascript\">{get_plotlyjs()}</script>\n</head>\n<body>\n<main>\n"
            f"<h1>{html.escape(self.title)}</h1>\n{subtitle}\n" + "\n".join(self._parts)
            + "\n</main>\n</body>\n</html>\n"
        )


def table(header: Sequence[str], rows: Sequence[Sequence[str]], sections: dict[int, str] | None = None) -> str:
    """An HTML table from pre-formatted cells; cells are escaped unless wrapped by `Markup`."""
    head = "".join(f"<th>{_cell(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        if sections and i in sections:
            body.append(f'<tr class="section"><td colspan="{len(header)}">{html.escape(sections[i])}</td></tr>')
        body.append("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>")
    return (f'<div class="card scroll"><table><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


class Markup(str):
    """A string of trusted HTML that `table` must not escape."""


def _cell(value: str) -> str:
    return value if isinstance(value, Markup) else html.escape(str(value))


def definition_list(rows: Sequence[tuple[str, str]]) -> str:
    items = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in rows)
    return f'<div class="card"><dl class="brief">{items}</dl></div>'


def details(summary: str, text: str) -> str:
    """A collapsed block of preformatted text (e.g. the full scenario)."""
    return (f'<details class="card"><summary>{html.escape(summary)}</summary>'
            f"<pre>{html.escape(text)}</pre></details>")


def write_atomically(text: str, path: Path) -> Path:
    """Write `text` to `path` via a temporary file in the same folder, so readers never see half a page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
