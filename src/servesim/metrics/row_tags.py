"""The tags of `Request.extra` that outputs and summary sections read, kept as typed columns.

An adapter run tags every request (`lora_hit`), andes traces may give each request its own QoE
targets, and a refused request says why. Held as a dict a row to the end of the run, they cost
about 450 bytes a request; here each tag is a row number and a value in two growing typed
columns (16 bytes), sorted by row once when the run is read.
"""

from __future__ import annotations

import numpy as np

from servesim.metrics.step_buffer import Column

#: The tags kept, and their type (the sections' sums keep ints as ints and bools as bools).
TAG_TYPES = {"reject_reason": str, "lora_hit": bool, "lora_load_s": float, "lora_num_loads": int,
             "lora_num_storage_loads": int, "qoe_tds": float, "qoe_ttft_s": float}
_DTYPES = {str: np.int32, bool: np.bool_, float: np.float64, int: np.int64}


class RowTags:
    """Per tag, the rows that carry it and their values; strings as codes into `_strings`."""

    def __init__(self) -> None:
        self._rows = {key: Column(np.int64) for key in TAG_TYPES}
        self._values = {key: Column(_DTYPES[kind]) for key, kind in TAG_TYPES.items()}
        self._strings: list[str] = []
        self._codes: dict[str, int] = {}
        self._read: dict[str, tuple[np.ndarray, np.ndarray]] | None = None  # key -> rows, values by row

    def add(self, row: int, extra: dict) -> None:
        """Keep `row`'s tags among `extra` (the request is over: its tags do not change)."""
        for key in TAG_TYPES.keys() & extra.keys():
            value = extra[key]
            if TAG_TYPES[key] is str:
                value = self._codes.setdefault(value, len(self._codes))
                if value == len(self._strings):
                    self._strings.append(extra[key])
            self._rows[key].append(row)
            self._values[key].append(value)
            self._read = None

    def _by_row(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        if self._read is None:
            self._read = {}
            for key in TAG_TYPES:
                rows, values = self._rows[key].array(), self._values[key].array()
                order = np.argsort(rows, kind="stable")
                self._read[key] = rows[order], values[order]
        return self._read

    def __bool__(self) -> bool:
        return any(len(rows) for rows, _ in self._by_row().values())

    def has(self, key: str) -> bool:
        """Whether any row carries tag `key`."""
        return len(self._by_row()[key][0]) > 0

    def at(self, key: str, rows: np.ndarray, default=0) -> tuple[np.ndarray, np.ndarray]:
        """For each of `rows`: whether it carries tag `key`, and its value (`default` where not)."""
        have, values = self._by_row()[key]
        rows = np.asarray(rows, dtype=np.int64)
        k = np.minimum(np.searchsorted(have, rows), max(len(have) - 1, 0))
        present = have[k] == rows if len(have) else np.zeros(len(rows), dtype=bool)
        out = np.full(len(rows), default, dtype=values.dtype)
        out[present] = values[k[present]]
        return present, out

    def get(self, row: int) -> dict:
        """Row `row`'s tags as `Request.extra` held them (empty when it carries none)."""
        out = {}
        for key, kind in TAG_TYPES.items():
            present, value = self.at(key, np.array([row]))
            if present[0]:
                out[key] = self._strings[value[0]] if kind is str else value[0].item()
        return out
