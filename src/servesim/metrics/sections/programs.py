"""Program (agent job) completion times: last call's finish minus first call's arrival.

Reported when requests carry `program_id` (agent programs from the workload layer). A program
counts as completed when every call seen in the run finished; programs with a rejected or
dropped call, or still running at the end, are counted in `num_incomplete`.
"""

from __future__ import annotations

import numpy as np

from servesim.metrics.request_table import NONE_ID
from servesim.workload.request import RequestState

KEY = "programs"


def completion_times_s(program_ids: np.ndarray, arrival_s: np.ndarray, finish_s: np.ndarray,
                       finished: np.ndarray) -> tuple[np.ndarray, int]:
    """(completion time of every completed program, number of incomplete programs)."""
    ids, inverse = np.unique(program_ids, return_inverse=True)
    first = np.full(len(ids), np.inf)
    last = np.full(len(ids), -np.inf)
    complete = np.ones(len(ids), dtype=bool)
    np.minimum.at(first, inverse, arrival_s)
    np.maximum.at(last, inverse, np.where(finished, finish_s, -np.inf))
    np.logical_and.at(complete, inverse, finished)
    return (last - first)[complete], int((~complete).sum())


def section(data) -> dict | None:
    c = data.table.cols
    rows = np.flatnonzero(c["program_id"] != NONE_ID)
    if not len(rows):
        return None
    times, incomplete = completion_times_s(c["program_id"][rows], c["arrival_s"][rows], c["finish_s"][rows],
                                           c["state"][rows] == int(RequestState.FINISHED))
    out = {"num_programs": len(times) + incomplete, "num_incomplete": incomplete}
    if len(times):
        out.update({
            "mean_completion_s": float(times.mean()),
            "p50_completion_s": float(np.percentile(times, 50)),
            "p90_completion_s": float(np.percentile(times, 90)),
            "p99_completion_s": float(np.percentile(times, 99)),
        })
    return out
