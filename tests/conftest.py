"""Shared test fixtures: where the repository and the read-only shared data live."""

from __future__ import annotations

import fcntl
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(autouse=True)
def _alone(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A test marked `alone` measures wall-clock latency: while it runs, no other xdist worker
    runs a test (every test holds a shared lock on one file, an `alone` test an exclusive one)."""
    if not hasattr(request.config, "workerinput"):  # not under xdist: tests run one at a time anyway
        yield
        return
    mode = fcntl.LOCK_EX if request.node.get_closest_marker("alone") else fcntl.LOCK_SH
    with open(tmp_path_factory.getbasetemp().parent / "alone.lock", "a") as f:
        fcntl.flock(f, mode)  # released when the file closes
        yield


@pytest.fixture
def examples() -> Path:
    return ROOT / "examples"
