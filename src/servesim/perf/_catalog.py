"""Loading the catalogues shipped in `perf/data/` and resolving names case-insensitively.

Each `<name>.yaml` has a parsed copy beside it, `<name>.parsed.json`: the same objects as JSON,
with the CRC-32 of the YAML bytes it was built from. A run reads the copy (json.loads, about
0.1 ms a file, fresh objects each call) instead of parsing YAML (about 8 ms for the five files
a run reads, a sixth of a 200-request run's CPU). A copy that no longer matches its YAML (the
YAML edited since) is ignored and the YAML parsed, so results never depend on it; rebuild with

    python -m servesim.perf.catalogue_copies

(`tests/perf/test_catalog_loading.py` fails while a copy is stale or differs from the YAML).
"""

from __future__ import annotations

import copy
import json
import zlib
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import yaml

from servesim.errors import InputError

# libyaml's parser with PyYAML's safe constructor: the same Python objects as yaml.safe_load
# (tests/perf/test_catalog_loading.py compares every shipped file) in about a seventh of the
# time. PyYAML built without libyaml falls back.
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
PARSED_SUFFIX = ".parsed.json"


def _data():
    return resources.files("servesim.perf").joinpath("data")


def parsed_name(filename: str) -> str:
    """The parsed copy's file name of a catalogue `<name>.yaml`."""
    return filename.removesuffix(".yaml") + PARSED_SUFFIX


@lru_cache(maxsize=None)  # (only when a parsed copy is missing or stale; callers get copies)
def _load_yaml(filename: str) -> dict[str, Any]:
    return yaml.load(_data().joinpath(filename).read_text(encoding="utf-8"), Loader=SafeLoader)


def _parsed(filename: str, source: bytes) -> dict[str, Any] | None:
    """The entries of the parsed copy if it was built from `source` (the YAML's bytes), else None."""
    try:
        doc = json.loads(_data().joinpath(parsed_name(filename)).read_bytes())
    except FileNotFoundError:
        return None
    return doc["document"] if doc.get("source_crc32") == zlib.crc32(source) else None


def catalogue(filename: str) -> dict[str, dict[str, Any]]:
    """The entries of a catalogue file, keyed by canonical (lower-case) name.

    Fresh objects each call: no caller can change what a later simulation in the same process
    reads (from the parsed copy; else a deep copy of the YAML parsed once per process).
    """
    entries = _parsed(filename, _data().joinpath(filename).read_bytes())
    return entries if entries is not None else copy.deepcopy(_load_yaml(filename))


def resolve(filename: str, kind: str, name: str) -> tuple[str, dict[str, Any]]:
    """(canonical name, entry) for `name` or one of its aliases, ignoring case.

    Raises InputError naming the allowed canonical names.
    """
    entries = catalogue(filename)
    key = str(name).strip().lower()
    if key in entries:
        return key, entries[key]
    for canonical, entry in entries.items():
        if key in (str(alias).lower() for alias in entry.get("aliases", [])):
            return canonical, entry
    raise InputError(f"unknown {kind} {name!r}; allowed: {', '.join(entries)}")


def read_user_file(path: Path, what: str, parse: Callable[[str], Any], fmt: str) -> Any:
    """Parse a user's file; a missing or malformed file is one InputError line naming it."""
    try:
        return parse(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{what} {str(path)!r} not found") from None
    except (OSError, ValueError, yaml.YAMLError) as exc:  # json.JSONDecodeError is a ValueError
        raise InputError(f"{what} {str(path)!r} is not valid {fmt}: {exc}") from None
