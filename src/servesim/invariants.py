"""The run's invariants, checked at the end of every simulation: every request ends in exactly
one terminal state, tokens add up between requests and steps, KV blocks are all returned, and
no replica's step log runs backwards. A failure is a simulator bug, never bad input."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from servesim.metrics.summary import tokens_per_request
from servesim.workload.request import RequestState

if TYPE_CHECKING:
    from servesim.replica.kv_cache import KVCacheManager
    from servesim.result import Result


def check_invariants(result: Result, kvs: list[KVCacheManager]) -> None:
    """Conservation and monotonicity, checked on every run (a failure is a simulator bug)."""
    for kv in kvs:
        kv.check_all_free()
    if any(r.stats.backwards for r in result.replicas):
        raise AssertionError("time ran backwards in the step log")
    emitted_total = 0
    last_id = None  # ids seen so far are unique and increasing up to this one (else: checked at the end)
    increasing = True
    for cols, runs in _passes(result):
        open_ = np.flatnonzero(cols.state < int(RequestState.FINISHED))
        if len(open_):
            i = open_[0]
            raise AssertionError(f"request {cols.id[i]} ended in non-terminal state "
                                 f"{RequestState(cols.state[i]).name}")
        emitted = tokens_per_request(runs)
        bad = np.flatnonzero((emitted != cols.num_output_tokens)
                             | ((cols.state == int(RequestState.FINISHED)) & (emitted != cols.output_len)))
        if len(bad):
            i = bad[0]
            raise AssertionError(f"request {cols.id[i]}: token counts do not add up ({emitted[i]} emitted, "
                                 f"{cols.num_output_tokens[i]} counted, {cols.output_len[i]} expected)")
        emitted_total += int(emitted.sum())
        if increasing and len(cols.id):
            ids = cols.id
            increasing = bool((np.diff(ids) > 0).all()) and (last_id is None or ids[0] > last_id)
            last_id = ids[-1]
    if emitted_total != sum(r.stats.output_tokens for r in result.replicas):
        raise AssertionError("tokens emitted by requests differ from tokens produced by steps")
    if not increasing:  # (generated and most traced ids increase with arrival: no whole-column pass)
        ids = np.sort(result.table.cols["id"])
        if (ids[1:] == ids[:-1]).any():
            raise AssertionError("a request id was seen twice")


def _passes(result: Result):
    """(summary columns, token runs) of the requests a chunk of rows at a time."""
    t = result.table
    for rows in t.chunks():
        yield t.request_columns(rows), t.token_runs_of(rows)
