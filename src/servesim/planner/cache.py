"""Probe results cached by the hash of the resolved scenario.

The key is the sha256 of the validated scenario (every default filled in) as canonical JSON,
so two plans that reach the same scenario share its result, and a re-run, a resumed run or a
widened search simulates nothing twice. The store is one JSON line per probe, appended and
flushed as each result arrives; a line cut short by an interruption is ignored on reading.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from servesim.scenario import validate_scenario


def resolve(scenario: dict[str, Any], where: str = "scenario") -> dict[str, Any]:
    """The scenario validated and dumped with every default (what the key is computed from)."""
    return validate_scenario(scenario, where).model_dump(mode="json")


def scenario_key(resolved: dict[str, Any]) -> str:
    text = json.dumps(resolved, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class ProbeCache:
    """In-memory map of key -> probe summary, optionally backed by an append-only JSONL file."""

    def __init__(self, path: Path | None = None):
        self.path = path
        self._data: dict[str, dict] = {}
        self.hits = 0
        if path is not None and path.is_file():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                    self._data[row["key"]] = row["summary"]
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by an interruption
        self._file = None

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> dict | None:
        value = self._data.get(key)
        if value is not None:
            self.hits += 1
        return value

    def put(self, key: str, summary: dict) -> None:
        self._data[key] = summary
        if self.path is not None:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                cut = self.path.is_file() and not self.path.read_bytes().endswith(b"\n") and self.path.stat().st_size
                self._file = open(self.path, "a")
                if cut:  # start after a line an interruption cut short
                    self._file.write("\n")
            self._file.write(json.dumps({"key": key, "summary": summary}, sort_keys=True) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
