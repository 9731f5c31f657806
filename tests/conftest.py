"""Shared test fixtures: where the repository and the read-only shared data live."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture
def examples() -> Path:
    return ROOT / "examples"
