"""Fixtures for the report tests: synthetic run folders and a headless Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest

from report_chromium import install_chromium
from report_synthetic_run import write_run


@pytest.fixture(scope="session")
def run_a(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic run folder: 400 requests, two tenants, two SLO classes, SLOs set."""
    return write_run(tmp_path_factory.mktemp("runs") / "baseline", seed=0)


@pytest.fixture(scope="session")
def run_b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like `run_a` but about 30% slower."""
    return write_run(tmp_path_factory.mktemp("runs") / "slower", seed=1, slowdown=1.3)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path to headless Chromium; installs the Debian package when missing, else skips."""
    path, why = install_chromium()
    if path is None:
        pytest.skip(f"browser test needs Chromium: {why}")
    return path
