"""Catalogue loading: what a run reads (the parsed copy, else the YAML through the C loader) is
exactly what yaml.safe_load gives, the copies are current, and callers cannot change what the
next caller reads."""

from __future__ import annotations

import json
from importlib import resources

import pytest
import yaml

from servesim.perf import _catalog
from servesim.perf._catalog import SafeLoader, catalogue
from servesim.perf.catalogue_copies import build_parsed_copies

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


@pytest.mark.parametrize("filename", FILES)
def test_every_catalogue_has_a_current_parsed_copy(filename: str):
    source = DATA.joinpath(filename).read_bytes()
    assert _catalog._parsed(filename, source) is not None, (
        f"{_catalog.parsed_name(filename)} is missing or older than {filename}: "
        "run `python -m servesim.perf.catalogue_copies`")
    assert _catalog._parsed(filename, source + b"\n# edited") is None


def test_a_run_reads_the_parsed_copy_not_the_yaml(monkeypatch):
    monkeypatch.setattr(_catalog, "_load_yaml", lambda filename: pytest.fail(f"parsed {filename}"))
    assert catalogue("models.yaml") == yaml.safe_load(DATA.joinpath("models.yaml").read_text(encoding="utf-8"))


def test_a_stale_copy_is_ignored_and_the_yaml_read(tmp_path, monkeypatch):
    for name in ("gpus.yaml", _catalog.parsed_name("gpus.yaml")):
        (tmp_path / name).write_bytes(DATA.joinpath(name).read_bytes())
    text = (tmp_path / "gpus.yaml").read_text(encoding="utf-8")
    first = next(iter(yaml.safe_load(text)))
    (tmp_path / "gpus.yaml").write_text(text.replace(f"{first}:", "edited-gpu:", 1), encoding="utf-8")
    monkeypatch.setattr(_catalog, "_data", lambda: tmp_path)
    _catalog._load_yaml.cache_clear()
    try:
        names = list(catalogue("gpus.yaml"))
    finally:
        _catalog._load_yaml.cache_clear()
    assert names[0] == "edited-gpu" and first not in names


def test_building_the_copies_refuses_what_json_would_change(tmp_path):
    (tmp_path / "ok.yaml").write_text("a: {b: 1, c: 1.0, d: [x, null, true]}\n", encoding="utf-8")
    (copy,) = build_parsed_copies(tmp_path)
    assert json.loads(copy.read_text(encoding="utf-8"))["document"] == {"a": {"b": 1, "c": 1.0, "d": ["x", None, True]}}
    (tmp_path / "dated.yaml").write_text("released: 2024-05-01\n", encoding="utf-8")
    with pytest.raises(ValueError, match="dated.yaml holds values JSON does not keep"):
        build_parsed_copies(tmp_path)
