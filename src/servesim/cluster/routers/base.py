"""The router plug-in contract.

A router picks, for each arriving request, one replica among `ClusterView.candidates` (or
None to reject it, e.g. load shedding). It reads replica load through the view (live or stale,
as the scenario's `router.refresh_interval_s` says) and may keep its own state, updated by
`on_dispatch` and `on_complete` (approximate prefix trees, counters between refreshes).

To add a policy: one file in this folder with a `Router` subclass decorated with
`@register("name")` and a pydantic `Params` model whose fields carry the reference
implementation's names, defaults and docstrings (cite the source in the class docstring).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from servesim.cluster.routers.common import UniformInts
from servesim.cluster.view import ClusterView
from servesim.workload.request import Request


class RouterParams(BaseModel):
    """Base of every router's parameters (unknown keys are rejected)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class Router:
    """Base class: holds the parameters, the replica count and a random generator."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[RouterParams]] = RouterParams
    # Does this router read replica state (views)? Routers that do not (round-robin, random)
    # let replicas process finishes late inside a fast-forwarded stretch.
    reads_state: ClassVar[bool] = True
    # Does it read the replicas' prefix caches (`view.cached_blocks`)? Then a request with
    # prefix keys cannot join a stretch in flight there (`replica/keyed_join.py`).
    reads_prefix_cache: ClassVar[bool] = False

    def __init__(self, params: RouterParams, num_replicas: int, rng: np.random.Generator) -> None:
        self.params = params
        self.num_replicas = num_replicas
        self.rng = rng  # the router's own stream, derived from the run's seed
        # `rng.integers(n)` drawn in blocks (`UniformInts`: it draws nothing until used), for a
        # router that draws nothing else from `rng` (a tie-break at every arrival); an attribute,
        # not a property: read at every arrival
        self.ints = UniformInts(rng)

    def bind(self, replicas: list, kv_store=None) -> None:
        """Called once the cluster's replicas exist (indices as in views), with the cluster's
        KV store (None without one). Routers that predict from the replicas' perf models
        (Mooncake's conductor) or count store hits (Dynamo's tiers) keep what they need; the
        others read views only."""

    def route(self, req: Request, view: ClusterView) -> int | None:  # pragma: no cover - abstract
        """The index (from `view.candidates`) of the replica that serves `req`, or None to reject."""
        raise NotImplementedError

    def on_dispatch(self, req: Request, replica: int, now_s: float) -> None:
        """`req` was sent to `replica` (update local state)."""

    def on_complete(self, req: Request, replica: int, now_s: float) -> None:
        """`req` left `replica` (finished, or failed there)."""
