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
    """(completion time of every completed program, in program id order; number of incomplete programs)."""
    _, first, last, complete = _by_program(program_ids, arrival_s, np.where(finished, finish_s, -np.inf), finished)
    return (last - first)[complete], int((~complete).sum())


def _by_program(ids: np.ndarray, first_s: np.ndarray, last_s: np.ndarray, complete: np.ndarray) -> tuple:
    """(program ids in order, the earliest first time, the latest last time and whether every
    part is complete, of each): of calls, or of partial results of the same form, since a
    minimum, a maximum and an `and` do not depend on how the calls were grouped."""
    ids, inverse = np.unique(ids, return_inverse=True)
    first = np.full(len(ids), np.inf)
    last = np.full(len(ids), -np.inf)
    done = np.ones(len(ids), dtype=bool)
    np.minimum.at(first, inverse, first_s)
    np.maximum.at(last, inverse, last_s)
    np.logical_and.at(done, inverse, complete)
    return ids, first, last, done


def section(data) -> dict | None:
    t, c = data.table, data.table.cols
    # each chunk of rows reduced to its programs, then the chunks' programs reduced once: the
    # memory is a program's four numbers (a program's calls span few chunks), not its calls' rows
    parts = []
    for chunk in t.chunks():
        pid = c["program_id"][chunk]
        rows = np.flatnonzero(pid != NONE_ID)
        if len(rows):
            finished = c["state"][chunk][rows] == int(RequestState.FINISHED)
            parts.append(_by_program(pid[rows], c["arrival_s"][chunk][rows],
                                     np.where(finished, c["finish_s"][chunk][rows], -np.inf), finished))
    if not parts:
        return None
    _, first, last, complete = _by_program(*(np.concatenate(p) for p in zip(*parts)))
    times, incomplete = (last - first)[complete], int((~complete).sum())
    out = {"num_programs": len(times) + incomplete, "num_incomplete": incomplete}
    if len(times):
        out.update({
            "mean_completion_s": float(times.mean()),
            "p50_completion_s": float(np.percentile(times, 50)),
            "p90_completion_s": float(np.percentile(times, 90)),
            "p99_completion_s": float(np.percentile(times, 99)),
        })
    return out
