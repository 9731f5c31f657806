"""A step's batch as the engine reads it from a `SchedulerOutput`: its decodes (one token, only
the last generated token left to compute) and its prompt (or recompute) chunks."""

from __future__ import annotations

from operator import itemgetter

from servesim.replica.schedulers.outputs import SchedulerOutput
from servesim.workload.request import Request

_request = itemgetter(0)


def split_batch(out: SchedulerOutput, now_s: float) -> tuple[list[Request], list[tuple[Request, int]]]:
    """(decodes, prefills), each in `scheduled`'s order; a chunk's request scheduled for the
    first time is stamped `now_s`. The scheduler's hints skip the test of each entry: the known
    decodes (a prefix of `scheduled`, handed over as a list where it has one) and its further
    runs of decodes (`decode_runs`: an overloaded Autellix batch held 4 in 10 of its decodes
    there, each tested)."""
    scheduled, known = out.scheduled, out.num_known_decodes
    decodes = list(map(_request, scheduled[:known])) if out.known_decodes is None else out.known_decodes
    prefills = []
    i = known
    if out.decode_runs is not None:
        for start, end in out.decode_runs:
            if i < start:
                _split(scheduled[i:start], decodes, prefills, now_s)
            decodes += map(_request, scheduled[start:end])
            i = end
    _split(scheduled[i:] if i else scheduled, decodes, prefills, now_s)
    return decodes, prefills


def _split(entries: list[tuple[Request, int]], decodes: list[Request], prefills: list, now_s: float) -> None:
    for r, n in entries:
        if n == 1 and r.num_output_tokens and r.prompt_len + r.num_output_tokens - r.num_computed_tokens == 1:
            decodes.append(r)
        else:
            prefills.append((r, n))
            if r.first_scheduled_s is None:
                r.first_scheduled_s = now_s
