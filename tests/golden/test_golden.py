"""Refactors keep results byte-identical: every golden case hashes as recorded."""

from __future__ import annotations

import json

import pytest

from .cases import HASHES, cases, digest

RECORDED = json.loads(HASHES.read_text())


@pytest.mark.parametrize("name", sorted(cases()))
def test_golden(name, tmp_path):
    path, overrides = cases()[name]
    assert name in RECORDED, f"no recorded hashes for {name}: run python tests/golden/regen.py"
    assert digest(path, overrides, tmp_path / "run") == RECORDED[name]
