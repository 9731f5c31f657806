"""Finished requests' rows on disk, written in chunks as they end and merged into arrival order.

The request table (request_table.py) gathers rows in finish order; with a spill folder each
flushed chunk of rows, sorted by arrival (`seq`), is appended to one scratch file, column after
column, followed by the chunk's token-run bounds. So the rows held in memory during a run are
one chunk, whatever the number of requests. At the end of the run the chunks are merged into
arrival order a block of BLOCK_ROWS rows at a time: a block takes, from every chunk whose
arrivals overlap it, the rows that arrived in it (a contiguous slice, the chunk being sorted),
and appends them to one file per column, and their token runs to the run files. Nothing in the
merge holds more than a block, whatever the number of requests. The table then maps the files
(`mmap`) when it reads them: reading a column, or a slice of rows for requests.csv,
touches only those pages, and a column that nothing reads costs nothing. The folder is the
run's temporary spill folder (deleted with the result, or when the run fails).
"""

from __future__ import annotations

import mmap
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from servesim.metrics.recorder import positions

#: Rows merged into arrival order at a time (memory of the merge: a block of one column).
BLOCK_ROWS = 1 << 16
#: Files of the token runs in arrival order (int64 each): first and last step of every run, and
#: the index of each row's first run.
RUN_FILES = {"run_starts": "runs-start.bin", "run_ends": "runs-end.bin", "first_run": "col-first_run.bin"}


class RowSpill:
    """Chunks of rows (one array per field) appended to `folder`/rows.bin."""

    def __init__(self, folder: Path, fields: tuple[tuple[str, type], ...]) -> None:
        self.folder = Path(folder)
        self.fields = [(name, np.dtype(dtype)) for name, dtype in fields]
        self._at = {name: sum(d.itemsize for _, d in self.fields[:k]) for k, (name, _) in enumerate(self.fields)}
        self._width = sum(d.itemsize for _, d in self.fields)
        self._path = self.folder / "rows.bin"
        self._file = open(self._path, "wb")
        # (file offset, rows, runs, first and last arrival) of each chunk
        self._chunks: list[tuple[int, int, int, int, int]] = []
        self._offset = 0

    def write(self, columns: list[np.ndarray], run_bounds: np.ndarray, run_replica: np.ndarray) -> None:
        """One chunk: a column per field (same lengths; the first, `seq`, ascending), and its
        runs (2 bounds and a replica each, in row order)."""
        n, runs = len(columns[0]), len(run_replica)
        for (_, dtype), values in zip(self.fields, columns):
            self._file.write(np.ascontiguousarray(values, dtype=dtype).data)
        self._file.write(np.ascontiguousarray(run_bounds, dtype=np.int64).data)
        self._file.write(np.ascontiguousarray(run_replica, dtype=np.int32).data)
        self._chunks.append((self._offset, n, runs, int(columns[0][0]), int(columns[0][-1])))
        self._offset += n * self._width + runs * 20

    def _read(self, f, chunk: tuple, name: str, lo: int, hi: int) -> np.ndarray:
        """Field `name` of rows lo..hi of `chunk`."""
        dtype = dict(self.fields)[name]
        f.seek(chunk[0] + chunk[1] * self._at[name] + lo * dtype.itemsize)
        return np.fromfile(f, dtype, hi - lo)

    def _runs(self, f, chunk: tuple, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """(bounds, replica) of runs lo..hi of `chunk` (bounds flat: start, end)."""
        f.seek(chunk[0] + chunk[1] * self._width + 16 * lo)
        bounds = np.fromfile(f, np.int64, 2 * (hi - lo))
        f.seek(chunk[0] + chunk[1] * self._width + 16 * chunk[2] + 4 * lo)
        return bounds, np.fromfile(f, np.int32, hi - lo)

    def merge(self, num_rows: int, offsets: list[int] | None) -> None:
        """Every column in arrival order, a file each, and the token runs (made to index the
        concatenated step log: `offsets`, first step of each replica's log) in RUN_FILES."""
        self._file.close()
        names = [name for name, _ in self.fields[1:]]
        outs = {name: open(self.folder / f"col-{name}.bin", "wb") for name in names}
        outs.update({key: open(self.folder / path, "wb") for key, path in RUN_FILES.items()})
        shift = None if not offsets or not any(offsets) else np.asarray(offsets, dtype=np.int64)
        num_runs_before = 0
        try:
            with open(self._path, "rb") as f:
                for b0 in range(0, num_rows, BLOCK_ROWS):
                    num_runs_before = self._merge_block(f, b0, min(b0 + BLOCK_ROWS, num_rows), names, outs, shift,
                                                        num_runs_before)
        finally:
            for out in outs.values():
                out.close()
        self._path.unlink(missing_ok=True)

    def _merge_block(self, f, b0: int, b1: int, names: list[str], outs: dict, shift: np.ndarray | None,
                     num_runs_before: int) -> int:
        """Rows b0..b1 (in arrival order) from the chunks that hold them; returns the runs so far."""
        parts, seqs, counts, bounds, reps = [], [], [], [], []
        for chunk in self._chunks:
            if chunk[3] >= b1 or chunk[4] < b0:
                continue
            seq = self._read(f, chunk, "seq", 0, chunk[1])
            lo, hi = np.searchsorted(seq, [b0, b1]).tolist()
            num = self._read(f, chunk, "num_runs", 0, chunk[1]).astype(np.int64)
            first = int(num[:lo].sum())
            parts.append((chunk, lo, hi))
            seqs.append(seq[lo:hi])
            counts.append(num[lo:hi])
            run_bounds, run_reps = self._runs(f, chunk, first, first + int(num[lo:hi].sum()))
            bounds.append(run_bounds)
            reps.append(run_reps)
        where = np.concatenate(seqs) - b0  # each part row's place in the block
        row_at = np.empty(b1 - b0, dtype=np.int64)
        row_at[where] = np.arange(b1 - b0)  # (every arrival of the block is in exactly one chunk)
        for name in names:
            values = np.concatenate([self._read(f, chunk, name, lo, hi) for chunk, lo, hi in parts])
            values[row_at].tofile(outs[name])
        count = np.concatenate(counts)
        flat, rep = np.concatenate(bounds), np.concatenate(reps)
        if shift is not None:
            flat = flat + np.repeat(shift[rep], 2)
        pick = positions((np.cumsum(count) - count)[row_at], count[row_at])
        flat[0::2][pick].tofile(outs["run_starts"])
        flat[1::2][pick].tofile(outs["run_ends"])
        count = count[row_at]
        (num_runs_before + np.cumsum(count) - count).tofile(outs["first_run"])
        return num_runs_before + int(count.sum())

    def columns(self, length: int, num_runs: int) -> "MappedColumns":
        dtypes = {name: dtype for name, dtype in self.fields if name != "seq"}
        return MappedColumns(self.folder, dtypes, length, num_runs)


class MappedColumns(Mapping):
    """Read-only columns mapped from their files; each access maps the file anew (cheap), so
    pages are resident only while the array (or a slice of it) is alive. `run(key)` maps the
    token runs' files (RUN_FILES) the same way."""

    def __init__(self, folder: Path, dtypes: dict[str, np.dtype], length: int, num_runs: int = 0) -> None:
        self.folder, self.dtypes, self.length, self.num_runs = folder, dtypes, length, num_runs

    def __getitem__(self, name: str) -> np.ndarray:
        return _map(self.folder / f"col-{name}.bin", self.dtypes[name], self.length)

    def run(self, key: str) -> np.ndarray:
        """`run_starts`, `run_ends` (one per run) or `first_run` (one per row), int64."""
        return _map(self.folder / RUN_FILES[key], np.dtype(np.int64),
                    self.length if key == "first_run" else self.num_runs)

    def __iter__(self):
        return iter(self.dtypes)

    def __len__(self) -> int:
        return len(self.dtypes)


def _map(path: Path, dtype: np.dtype, length: int) -> np.ndarray:
    if length == 0:
        return np.empty(0, dtype=dtype)
    # mmap and frombuffer, not np.memmap: the same read-only pages, without memmap's resolve()
    # of the path (an lstat per component) on each of the thousands of maps writing a run makes
    with open(path, "rb") as f:
        pages = mmap.mmap(f.fileno(), length * dtype.itemsize, access=mmap.ACCESS_READ)
    return np.frombuffer(pages, dtype=dtype, count=length)
