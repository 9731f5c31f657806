"""Catalogue loading: the C YAML loader gives exactly what yaml.safe_load gives, and callers
cannot change what the next caller reads."""

from __future__ import annotations

from importlib import resources

import pytest
import yaml

from servesim.perf._catalog import SafeLoader, catalogue

DATA = resources.files("servesim.perf").joinpath("data")
FILES = sorted(p.name for p in DATA.iterdir() if p.name.endswith(".yaml"))


def test_every_shipped_catalogue_is_checked():
    assert {"gpus.yaml", "models.yaml", "engines.yaml", "calibration_default.yaml"} <= set(FILES)


@pytest.mark.skipif(not hasattr(yaml, "CSafeLoader"), reason="PyYAML built without libyaml")
def test_the_c_loader_is_used_when_available():
    assert SafeLoader is yaml.CSafeLoader


@pytest.mark.parametrize("filename", FILES)
def test_catalogue_equals_pure_python_safe_load(filename: str):
    expected = yaml.safe_load(DATA.joinpath(filename).read_text(encoding="utf-8"))
    got = catalogue(filename)
    assert got == expected
    assert repr(got) == repr(expected)  # same types too (1 vs 1.0, keys in file order)


def test_a_caller_mutating_its_catalogue_does_not_change_the_next_one():
    first = catalogue("gpus.yaml")
    name = next(iter(first))
    first[name]["hbm_bytes"] = -1
    first.pop(next(iter(first)))
    again = catalogue("gpus.yaml")
    assert name in again and again[name] != first.get(name)
    assert again == yaml.safe_load(DATA.joinpath("gpus.yaml").read_text(encoding="utf-8"))
