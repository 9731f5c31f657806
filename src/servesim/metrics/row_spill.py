"""Finished requests' rows on disk, written in chunks as they end and read back by column.

The request table (request_table.py) gathers rows in finish order; with a spill folder each
flushed chunk of rows is appended to one scratch file, column after column, followed by the
chunk's token-run bounds. So the rows held in memory during a run are one chunk, whatever the
number of requests. At the end of the run every column is read back (only its slices of the
file), put in arrival order and written to a file of its own, which the table then maps
(`np.memmap`): reading a column, or a slice of rows for requests.csv, touches only those pages,
and a column that nothing reads costs nothing. The folder is the run's temporary spill folder
(deleted with the result, or when the run fails).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np


class RowSpill:
    """Chunks of rows (one array per field) appended to `folder`/rows.bin."""

    def __init__(self, folder: Path, fields: tuple[tuple[str, type], ...]) -> None:
        self.folder = Path(folder)
        self.fields = [(name, np.dtype(dtype)) for name, dtype in fields]
        self._path = self.folder / "rows.bin"
        self._file = open(self._path, "wb")
        self._chunks: list[tuple[int, int, int]] = []  # (file offset, rows, runs) of each chunk
        self._offset = 0

    def write(self, columns: list[np.ndarray], run_bounds: np.ndarray, run_replica: np.ndarray) -> None:
        """One chunk: a column per field (same lengths), and its runs (2 bounds and a replica each)."""
        n, runs = len(columns[0]), len(run_replica)
        for (_, dtype), values in zip(self.fields, columns):
            self._file.write(np.ascontiguousarray(values, dtype=dtype).tobytes())
        self._file.write(np.ascontiguousarray(run_bounds, dtype=np.int64).tobytes())
        self._file.write(np.ascontiguousarray(run_replica, dtype=np.int32).tobytes())
        self._chunks.append((self._offset, n, runs))
        self._offset += n * sum(d.itemsize for _, d in self.fields) + runs * 20

    def finish(self) -> None:
        self._file.close()

    def read(self, name: str) -> np.ndarray:
        """Field `name` of every row, in the order the rows were written."""
        k = [f for f, _ in self.fields].index(name)
        dtype = self.fields[k][1]
        row_bytes = sum(d.itemsize for _, d in self.fields[:k])
        out = np.empty(sum(n for _, n, _ in self._chunks), dtype=dtype)
        at = 0
        with open(self._path, "rb") as f:
            for offset, n, _ in self._chunks:
                f.seek(offset + n * row_bytes)
                out[at:at + n] = np.fromfile(f, dtype, n)
                at += n
        return out

    def runs(self) -> tuple[np.ndarray, np.ndarray]:
        """(bounds, replica) of every token run, in the order written (bounds flat: start, end)."""
        width = sum(d.itemsize for _, d in self.fields)
        bounds, reps = [], []
        with open(self._path, "rb") as f:
            for offset, n, runs in self._chunks:
                f.seek(offset + n * width)
                bounds.append(np.fromfile(f, np.int64, 2 * runs))
                reps.append(np.fromfile(f, np.int32, runs))
        return (np.concatenate(bounds) if bounds else np.empty(0, np.int64),
                np.concatenate(reps) if reps else np.empty(0, np.int32))

    def remove(self) -> None:
        """The chunk file is no longer needed once the columns are written in arrival order."""
        self._path.unlink(missing_ok=True)

    def write_column(self, name: str, values: np.ndarray) -> None:
        values.tofile(self.folder / f"col-{name}.bin")

    def columns(self, length: int) -> "MappedColumns":
        return MappedColumns(self.folder, {name: dtype for name, dtype in self.fields if name != "seq"}, length)


class MappedColumns(Mapping):
    """Read-only columns mapped from their files; each access maps the file anew (cheap), so
    pages are resident only while the array (or a slice of it) is alive."""

    def __init__(self, folder: Path, dtypes: dict[str, np.dtype], length: int) -> None:
        self.folder, self.dtypes, self.length = folder, dtypes, length

    def __getitem__(self, name: str) -> np.ndarray:
        dtype = self.dtypes[name]
        if self.length == 0:
            return np.empty(0, dtype=dtype)
        return np.memmap(self.folder / f"col-{name}.bin", dtype=dtype, mode="r", shape=(self.length,)).view(np.ndarray)

    def __iter__(self):
        return iter(self.dtypes)

    def __len__(self) -> int:
        return len(self.dtypes)
