"""Loading the YAML catalogues shipped in `perf/data/` and resolving names case-insensitively."""

from __future__ import annotations

import copy
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import yaml

from servesim.errors import InputError

# libyaml's parser with PyYAML's safe constructor: the same Python objects as yaml.safe_load
# (tests/perf/test_catalog_loading.py compares every shipped file) in about a seventh of the
# time, which a short `servesim run` notices. PyYAML built without libyaml falls back.
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@lru_cache(maxsize=None)  # package data never changes within a process; callers get copies
def _load_yaml(filename: str) -> dict[str, Any]:
    text = resources.files("servesim.perf").joinpath("data").joinpath(filename).read_text(encoding="utf-8")
    return yaml.load(text, Loader=SafeLoader)


def catalogue(filename: str) -> dict[str, dict[str, Any]]:
    """The entries of a catalogue file, keyed by canonical (lower-case) name.

    A fresh copy each call (about 0.1 ms): the parse is cached per process, but no caller can
    change what a later simulation in the same process reads.
    """
    return copy.deepcopy(_load_yaml(filename))


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
