"""Optional summary sections, one per module, found automatically.

A module here defines `KEY` (the summary.json key) and `section(data: SectionInput) -> dict | None`
(a pure function; None when the run has nothing to report for it, e.g. no tenants). Policies
add what they are about (fairness, QoE, program completion times) without touching
`summary.py`.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass

import numpy as np

from servesim.metrics.recorder import positions
from servesim.metrics.request_table import RequestTable
from servesim.metrics.step_ends import read_ranges
from servesim.workload.request import Request


@dataclass(frozen=True)
class SectionInput:
    """What a section reads: the run's requests as rows (a list of `Request` objects is turned
    into a table, for callers that hold them), the step end times and the scenario.

    A section reads the table a chunk of rows at a time (`table.chunks()`: every row at once
    when the table is in memory, ROWS_PER_PASS when it was spilled) and keeps what grows with
    the rows in `StreamValues`, so a run's summary holds a chunk, not a column."""

    requests: RequestTable | list[Request]  # every request of the run, rows in arrival order
    # end time of every engine step (index = step number in token runs): an array, or a StepEnds
    # (metrics/step_ends.py) reading files when the run reduced its step logs as they came
    step_ends_s: np.ndarray
    params: dict  # the scenario as a plain dict (scheduler parameters, SLOs, ...)
    # where a section's values per request go once there are too many to hold (StreamValues):
    # the run's spill folder, or None (the system's temporary folder)
    folder: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.requests, RequestTable):
            object.__setattr__(self, "requests", RequestTable.from_requests(list(self.requests)))

    @property
    def table(self) -> RequestTable:
        return self.requests  # (a RequestTable after __post_init__)

    def token_times_of(self, rows: np.ndarray) -> np.ndarray:
        """Emission times of every token of the requests `rows` (grouped by request)."""
        return self._token_times(rows)[0]

    def token_times_each(self, rows: np.ndarray, chunk: int = 512):
        """Emission times of each request of `rows`, one array per request, read a chunk of
        requests at a time (one read of the step ends per chunk, not per request: a spilled
        step log maps its file once per read)."""
        for _, times, per_row in self.token_times_chunks(rows, chunk):
            yield from np.split(times, np.cumsum(per_row)[:-1])

    def token_times_chunks(self, rows: np.ndarray, chunk: int = 512):
        """(rows of the chunk, their token times grouped by request, the number of tokens of
        each) for `rows` a chunk at a time: for sections that compute on whole chunks."""
        for c in range(0, len(rows), chunk):
            part = rows[c:c + chunk]
            times, run_lens, num_runs = self._token_times(part)
            owner = np.repeat(np.arange(len(part)), num_runs)
            yield part, times, np.bincount(owner, weights=run_lens, minlength=len(part)).astype(np.int64)

    def _token_times(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(emission times of the requests' tokens, grouped by request; the length of each of
        their token runs; the number of runs of each request)."""
        t = self.table
        num_runs = t.cols["num_runs"][rows]
        pick = positions(t.first_run[rows], num_runs)
        starts = t.run_starts[pick]
        run_lens = t.run_ends[pick] - starts + 1
        return read_ranges(self.step_ends_s, starts, run_lens), run_lens, num_runs


def compute_sections(data: SectionInput) -> dict:
    out = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        value = module.section(data)
        if value is not None:
            out[module.KEY] = value
    return out
