"""Open the reports in real headless Chromium: every plot is drawn and the screenshot is not blank.

Chromium comes from the system packages; the `chromium` fixture installs it when missing
(as root with apt-get) and skips with the reason only when it cannot.
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from report_chromium import dump_dom, screenshot
from report_png import read_png
from servesim.report import write_comparison_report, write_run_report

PLOTLY_BLUE = (0x63, 0x6E, 0xFA)  # first colour of plotly's default palette: the curves


class PlotCensus(HTMLParser):
    """Count rendered plotly SVG layers and traces inside each `data-plot` container."""

    def __init__(self) -> None:
        super().__init__()
        self.svgs: dict[str, int] = {}
        self.traces: dict[str, int] = {}
        self._stack: list[str | None] = []  # the container each open div belongs to

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        current = next((c for c in reversed(self._stack) if c), None)
        if tag == "div":
            name = a.get("data-plot")
            if name:
                self.svgs.setdefault(name, 0)
                self.traces.setdefault(name, 0)
            self._stack.append(name)
        elif current and tag == "svg" and "main-svg" in (a.get("class") or "").split():
            self.svgs[current] += 1
        elif current and tag == "path" and "js-line" in (a.get("class") or "").split():
            self.traces[current] += 1
        elif current and tag == "g" and "bars" in (a.get("class") or "").split():
            self.traces[current] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "div" and self._stack:
            self._stack.pop()


def census(dom: str) -> PlotCensus:
    parser = PlotCensus()
    parser.feed(dom)
    return parser


def assert_all_drawn(dom: str, expected: list[str]) -> None:
    found = census(dom)
    assert list(found.svgs) == expected
    for name in expected:
        assert found.svgs[name] >= 1, f"plot {name!r} has no rendered svg.main-svg"
        assert found.traces[name] >= 1, f"plot {name!r} has no drawn line or bar"


def assert_not_blank(png: Path) -> None:
    pixels = read_png(png)[..., :3].astype(int)
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 100, "screenshot has almost no colours: nothing was drawn"
    background = np.all(pixels == pixels[0, 0], axis=-1).mean()
    assert background < 0.95, "screenshot is almost all background"
    curve = np.all(np.abs(pixels - PLOTLY_BLUE) < 30, axis=-1)
    assert curve.sum() > 2000, "no plotted curves visible in the screenshot"


def test_run_report_renders_in_chromium(chromium: str, run_a: Path, tmp_path: Path) -> None:
    page = write_run_report(run_a, tmp_path / "report.html")
    assert_all_drawn(dump_dom(chromium, page),
                     ["ttft_s", "tpot_s", "e2e_s", "timeseries", "by-tenant", "by-slo_class"])
    assert_not_blank(screenshot(chromium, page, tmp_path / "report.png"))


def test_comparison_report_renders_in_chromium(chromium: str, run_a: Path, run_b: Path,
                                               tmp_path: Path) -> None:
    page = write_comparison_report([run_a, run_b], tmp_path)
    assert_all_drawn(dump_dom(chromium, page), ["differences", "ttft_s", "tpot_s", "e2e_s", "timeseries"])
    assert_not_blank(screenshot(chromium, page, tmp_path / "comparison.png"))


def test_census_sees_an_undrawn_plot() -> None:
    """The check itself: a container whose script never ran has no svg and fails."""
    dom = '<div class="card plot" data-plot="x"><div class="plotly-graph-div"></div></div>'
    with pytest.raises(AssertionError, match="no rendered svg"):
        assert_all_drawn(dom, ["x"])
