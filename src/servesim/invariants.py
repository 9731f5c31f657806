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
    from servesim.simulation import Result


def check_invariants(result: Result, kvs: list[KVCacheManager]) -> None:
    """Conservation and monotonicity, checked on every run (a failure is a simulator bug)."""
    for kv in kvs:
        kv.check_all_free()
    if any(r.stats.backwards for r in result.replicas):
        raise AssertionError("time ran backwards in the step log")
    cols = result.columns
    open_ = np.flatnonzero(cols.state < int(RequestState.FINISHED))
    if len(open_):
        i = open_[0]
        raise AssertionError(f"request {cols.id[i]} ended in non-terminal state {RequestState(cols.state[i]).name}")
    emitted = tokens_per_request(result.table.token_runs())
    bad = np.flatnonzero((emitted != cols.num_output_tokens)
                         | ((cols.state == int(RequestState.FINISHED)) & (emitted != cols.output_len)))
    if len(bad):
        i = bad[0]
        raise AssertionError(f"request {cols.id[i]}: token counts do not add up ({emitted[i]} emitted, "
                             f"{cols.num_output_tokens[i]} counted, {cols.output_len[i]} expected)")
    if int(emitted.sum()) != sum(r.stats.output_tokens for r in result.replicas):
        raise AssertionError("tokens emitted by requests differ from tokens produced by steps")
    if len(np.unique(cols.id)) != len(cols.id):
        raise AssertionError("a request id was seen twice")
