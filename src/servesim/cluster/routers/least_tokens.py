"""Least outstanding tokens (splitwise-sim `token_jsq`)."""

from __future__ import annotations

from servesim.cluster.routers import register
from servesim.cluster.routers.base import Router, RouterParams
from servesim.cluster.routers.common import TieBreak, argmin_pick
from servesim.cluster.view import ClusterView
from servesim.workload.request import Request


class LeastTokensParams(RouterParams):
    tie_break: TieBreak = "first"
    """Among replicas with equally few tokens: `first` (lowest index; splitwise-sim takes
    Python's `min`) or `random`."""


@register("least-tokens")
class LeastTokens(Router):
    """argmin outstanding prefill + decode tokens on the replica.

    Source: splitwise-sim `TokenJSQScheduler` (`token_jsq`: the instance with the fewest
    pending tokens). Prefill tokens are prompt (or recompute) tokens not yet computed; decode
    tokens are output tokens still to generate, from the simulation's lengths, i.e. an
    oracle on output length, as splitwise-sim's simulator has.
    """

    Params = LeastTokensParams

    def route(self, req: Request, view: ClusterView) -> int | None:
        cands = view.candidates
        keys = []
        for i in cands:
            v = view.view(i)
            keys.append(v.outstanding_prefill_tokens + v.outstanding_decode_tokens)
        return argmin_pick(cands, keys, self.params.tie_break, self.ints)
