"""The HTML pages: self-contained, every expected plot present, written atomically."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from plotly.offline import get_plotlyjs

from servesim.errors import InputError
from servesim.report import write_comparison_report, write_run_report

RUN_PLOTS = ["ttft_s", "tpot_s", "e2e_s", "timeseries", "by-tenant", "by-slo_class"]


def plots(page: str) -> list[str]:
    return re.findall(r'<div class="card plot" data-plot="([^"]+)"', page)


def assert_offline(page: str) -> None:
    """Plotly.js is inline exactly once; no script, style or font is fetched from anywhere."""
    assert page.count("<script") == page.count("</script>")
    assert not re.search(r"<script[^>]*\bsrc=", page)
    assert not re.search(r"<link[^>]*\bhref=", page)
    assert not re.search(r"@import|url\(\s*['\"]?https?:", page.split("<script", 1)[0])
    assert page.count(get_plotlyjs()[:300]) == 1


def test_run_report_default_path_and_content(run_a: Path) -> None:
    path = write_run_report(run_a)
    assert path == run_a / "report.html"
    page = path.read_text(encoding="utf-8")
    assert_offline(page)
    assert plots(page) == RUN_PLOTS
    for text in ("Llama-3.1-8B-Instruct", "H100-80GB", "fcfs", "poisson", "TTFT SLO 500 ms",
                 "TPOT SLO 50 ms", "Request rate", "KV-cache usage", "Requests in the system",
                 "acme", "globex", "interactive", "jain_index", "qoe", "SLO attainment"):
        assert text in page, text
    summary = json.loads((run_a / "summary.json").read_text())
    p99_ms = summary["ttft_s"]["p99"] * 1000
    assert f"{p99_ms:.1f} ms" in page  # latencies are shown in milliseconds


def test_run_report_custom_path_and_no_temp_files(run_a: Path, tmp_path: Path) -> None:
    out = tmp_path / "deep" / "r.html"
    assert write_run_report(run_a, out) == out
    assert [p.name for p in out.parent.iterdir()] == ["r.html"]
    assert len(out.read_bytes()) < 6_000_000


def test_run_report_without_slos_or_requests(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text(json.dumps({"num_requests": 3, "num_finished": 3}))
    page = write_run_report(tmp_path).read_text()
    assert plots(page) == []
    assert "requests.csv not found" in page and "SLO " not in page.split("<body>")[1]


def test_failed_report_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="has no summary.json"):
        write_run_report(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_target_is_an_input_error(run_a: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot write report"):
        write_run_report(run_a, blocker / "report.html")


def test_comparison_report(run_a: Path, run_b: Path, tmp_path: Path) -> None:
    path = write_comparison_report([run_a, run_b], tmp_path / "cmp")
    assert path == tmp_path / "cmp" / "comparison.html"
    page = path.read_text(encoding="utf-8")
    assert_offline(page)
    assert plots(page) == ["differences", "ttft_s", "tpot_s", "e2e_s", "timeseries"]
    assert "Differences against baseline" in page
    # Slower run: its TTFT p99 is worse (red) and shown with a relative change.
    assert re.search(r'TTFT p99</td><td>[^<]+</td><td>[^<]+<span class="delta worse">\(\+\d', page)
    assert "By tenant" in page and "By SLO class" in page


def test_comparison_labels_and_duplicates(run_a: Path, tmp_path: Path) -> None:
    page = write_comparison_report([run_a, run_a], tmp_path, labels=["old", "new"]).read_text()
    assert "<th>old</th><th>new</th>" in page
    page = write_comparison_report([run_a, run_a], tmp_path).read_text()
    assert "baseline (2)" in page
    with pytest.raises(InputError, match="1 labels for 2 run folders"):
        write_comparison_report([run_a, run_a], tmp_path, labels=["x"])


def test_user_text_is_escaped(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text(json.dumps(
        {"num_requests": 1, "per_tenant": {"<b>evil</b>": {"num_requests": 1}}}))
    (tmp_path / "scenario.yaml").write_text("model: '<script>alert(1)</script>'\n")
    page = write_run_report(tmp_path).read_text()
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page
    assert "<b>evil</b>" not in page
