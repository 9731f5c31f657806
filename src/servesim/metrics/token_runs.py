"""A request table's token runs read a chunk of rows at a time (`RequestTable.token_runs_of`,
`run_reader`): from the table's columns, or, for the step log's helper process after the run,
from the spilled files alone or from arrays sent once (both picklable: `SpilledRuns`, `HeldRuns`).
"""

from __future__ import annotations

import numpy as np

from servesim.metrics.row_spill import MappedColumns


class SpilledRuns:
    """A closed, spilled table's token runs a chunk of rows at a time, as `Result.run_chunks`
    reads them (an `itl.RunChunks`), from its files alone: picklable, so the step log's helper
    process joins them with the step ends after the run (step_helper.py)."""

    def __init__(self, cols: MappedColumns, num_rows: int, rows_per_pass: int) -> None:
        self.cols, self.num_rows, self.rows_per_pass = cols, num_rows, rows_per_pass

    def __call__(self):
        return (token_runs(self.cols, self.cols.run, rows) for rows in row_slices(self.num_rows, self.rows_per_pass))


class HeldRuns:
    """A table's token runs held in memory, as `SpilledRuns` gives them from files."""

    def __init__(self, chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        self.chunks = chunks

    def __call__(self):
        return iter(self.chunks)


def row_slices(n: int, rows: int):
    """Slices of `rows` rows (the last one shorter) over n rows."""
    for start in range(0, n, rows):
        yield slice(start, min(start + rows, n))


def token_runs(cols, run, rows: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(runs per row, run starts, run ends) of a slice of rows of a table's columns `cols`, its
    runs read by key with `run` (`RequestTable.token_runs_of`)."""
    counts = cols["num_runs"][rows].astype(np.int64)
    if not len(counts):
        return counts, np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    first = int(run("first_run")[rows.start])
    stop = first + int(counts.sum())
    return counts, np.array(run("run_starts")[first:stop]), np.array(run("run_ends")[first:stop])
