"""What routers see of the replicas: live numbers, or numbers as of the last metrics refresh.

A `ReplicaView` is the engine's scraped metrics (running, waiting, KV usage) plus what a
router tracks itself (requests and tokens it dispatched that have not finished). Views are
computed on demand (`ClusterView.view`), so a router that reads nothing (round-robin) costs
nothing per replica, and one that reads a few fields pays only for those replicas.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:
    from servesim.workload.request import Request


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """One replica's load at `time_s` (the decision time, or the last refresh when stale)."""

    index: int  # replica index in the cluster (stable for the whole run)
    pool: str
    time_s: float
    num_outstanding: int  # requests dispatched here and not finished (a router's in-flight counter)
    num_running: int  # engine metric: requests in the running batch
    num_waiting: int  # engine metric: requests queued (waiting, preempted or swapped)
    kv_used_blocks: int
    num_gpu_blocks: int
    outstanding_prefill_tokens: int  # prompt (or recompute) tokens not yet computed
    outstanding_decode_tokens: int  # output tokens still to generate (the simulation's lengths)

    @property
    def kv_usage(self) -> float:
        """Share of GPU KV blocks in use (vLLM's `gpu_cache_usage_perc`, 0-1)."""
        return self.kv_used_blocks / self.num_gpu_blocks if self.num_gpu_blocks else 1.0


class ClusterView:
    """The eligible replicas for one routing decision and a way to read each one's state.

    `candidates` are replica indices, in a fixed order (healthy replicas of the pools that
    serve the request's model). `view(i)` is memoised within the decision. `cached_blocks(i,
    req)` is the engine's real prefix-cache hit (in prefix blocks) on replica i, for routers
    that model precise, KV-event-driven cache awareness.
    """

    __slots__ = ("now_s", "candidates", "_read", "_cached", "_memo")

    def __init__(self, now_s: float, candidates: Sequence[int], read: Callable[[int], ReplicaView],
                 cached_blocks: Callable[[int, "Request"], int]) -> None:
        self.now_s = now_s
        self.candidates = candidates
        self._read = read
        self._cached = cached_blocks
        self._memo: dict[int, ReplicaView] = {}

    def view(self, i: int) -> ReplicaView:
        v = self._memo.get(i)
        if v is None:
            v = self._memo[i] = self._read(i)
        return v

    def views(self) -> list[ReplicaView]:
        return [self.view(i) for i in self.candidates]

    def cached_blocks(self, i: int, req: "Request") -> int:
        return self._cached(i, req)
