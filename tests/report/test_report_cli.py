"""`servesim report` on a fresh Typer app (the shared app also loads other engineers' commands)."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

from servesim.cli import report as report_cli


def app() -> typer.Typer:
    a = typer.Typer(pretty_exceptions_enable=False)
    report_cli.register(a)

    @a.callback()
    def _root() -> None:  # keep `report` a named sub-command, as in the real app
        pass

    return a


def invoke(*args: str):
    return CliRunner().invoke(app(), ["report", *args])


def test_single_run(run_a: Path) -> None:
    result = invoke(str(run_a))
    assert result.exit_code == 0, result.output
    assert (run_a / "report.html").is_file()
    assert "report.html" in result.stdout


def test_single_run_with_out(run_a: Path, tmp_path: Path) -> None:
    result = invoke(str(run_a), "--out", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "report.html").is_file()


def test_comparison(run_a: Path, run_b: Path, tmp_path: Path) -> None:
    result = invoke(str(run_a), str(run_b), "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "comparison.html").is_file()


def test_comparison_needs_out(run_a: Path, run_b: Path) -> None:
    result = invoke(str(run_a), str(run_b))
    assert result.exit_code == 2
    assert result.stderr == "error: comparing several runs needs --out DIR for comparison.html\n"


def test_bad_folder_is_one_line_without_traceback(tmp_path: Path) -> None:
    result = invoke(str(tmp_path))
    assert result.exit_code == 2
    assert result.stderr == f"error: OUT_DIR '{tmp_path}' has no summary.json; is it a servesim run folder?\n"
    assert "Traceback" not in result.output
    assert not (tmp_path / "report.html").exists()
