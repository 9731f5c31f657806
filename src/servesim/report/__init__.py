"""HTML reports for servesim runs, built from a run's output folder only.

`write_run_report` renders one run; `write_comparison_report` puts several runs side by side
with their differences against the first. Pages embed plotly.js once and load nothing from the
network, so they open offline.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from servesim.errors import InputError

__all__ = ["write_run_report", "write_comparison_report"]


def write_run_report(run_dir: Path, out_path: Path | None = None) -> Path:
    """Write the report for the run folder `run_dir` (default `run_dir/report.html`); return its path."""
    from servesim.report.load import load_run
    from servesim.report.single import build_run_page

    run_dir = Path(run_dir)
    out_path = Path(out_path) if out_path is not None else run_dir / "report.html"
    page = build_run_page(load_run(run_dir))
    return _write(page.render(), out_path)


def write_comparison_report(run_dirs: Sequence[Path], out_dir: Path,
                            labels: Sequence[str] | None = None) -> Path:
    """Write `out_dir/comparison.html` comparing the runs; differences are against the first."""
    from servesim.report.compare import build_comparison_page, unique_labels
    from servesim.report.load import load_run

    if not run_dirs:
        raise InputError("comparison needs at least one run folder")
    if labels is not None and len(labels) != len(run_dirs):
        raise InputError(f"got {len(labels)} labels for {len(run_dirs)} run folders; give one per run")
    runs = [load_run(Path(d)) for d in run_dirs]
    page = build_comparison_page(runs, unique_labels(runs, labels))
    return _write(page.render(), Path(out_dir) / "comparison.html")


def _write(text: str, path: Path) -> Path:
    from servesim.report.html import write_atomically

    try:
        return write_atomically(text, path)
    except OSError as exc:
        raise InputError(f"cannot write report '{path}': {exc.strerror or exc}") from None
