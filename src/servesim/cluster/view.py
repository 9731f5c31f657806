"""What routers see of the replicas: live numbers, or numbers as of the last metrics refresh.

A `ReplicaView` is the engine's scraped metrics (running, waiting, KV usage) plus what a
router tracks itself (requests and tokens it dispatched that have not finished). Views are
computed on demand (`ClusterView.view`), so a router that reads nothing (round-robin) costs
nothing per replica, and one that reads a few fields pays only for those replicas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:
    from servesim.workload.request import Request


class ReplicaView:
    """One replica's load at `time_s` (the decision time, or the last refresh when stale).

    The counts are read when the view is made; KV blocks and outstanding tokens cost a pass
    over the replica's batch, so a live view computes them on first access (a view is valid
    for the decision it was made for; stale views are computed in full when taken).
    """

    __slots__ = ("index", "pool", "time_s", "num_outstanding", "num_running", "num_waiting", "num_gpu_blocks",
                 "_kv_used_blocks", "_prefill", "_decode", "_lazy")

    def __init__(self, index: int, pool: str, time_s: float, num_outstanding: int, num_running: int,
                 num_waiting: int, kv_used_blocks: int | None = None, num_gpu_blocks: int = 0,
                 outstanding_prefill_tokens: int | None = None, outstanding_decode_tokens: int | None = None,
                 lazy: Callable[[], tuple[int, int, int]] | None = None) -> None:
        self.index = index  # replica index in the cluster (stable for the whole run)
        self.pool = pool
        self.time_s = time_s
        self.num_outstanding = num_outstanding  # dispatched here and not finished (a router's in-flight counter)
        self.num_running = num_running  # engine metric: requests in the running batch
        self.num_waiting = num_waiting  # engine metric: requests queued (waiting, preempted or swapped)
        self.num_gpu_blocks = num_gpu_blocks
        self._kv_used_blocks = kv_used_blocks
        self._prefill = outstanding_prefill_tokens
        self._decode = outstanding_decode_tokens
        self._lazy = lazy  # () -> (kv_used_blocks, prefill tokens, decode tokens)

    def _force(self) -> None:
        self._kv_used_blocks, self._prefill, self._decode = self._lazy()
        self._lazy = None

    @property
    def kv_used_blocks(self) -> int:
        if self._lazy is not None:
            self._force()
        return self._kv_used_blocks

    @property
    def outstanding_prefill_tokens(self) -> int:
        """Prompt (or recompute) tokens not yet computed."""
        if self._lazy is not None:
            self._force()
        return self._prefill

    @property
    def outstanding_decode_tokens(self) -> int:
        """Output tokens still to generate (the simulation's lengths)."""
        if self._lazy is not None:
            self._force()
        return self._decode

    @property
    def kv_usage(self) -> float:
        """Share of GPU KV blocks in use (vLLM's `gpu_cache_usage_perc`, 0-1)."""
        return self.kv_used_blocks / self.num_gpu_blocks if self.num_gpu_blocks else 1.0

    def __repr__(self) -> str:
        return (f"ReplicaView(index={self.index}, time_s={self.time_s}, outstanding={self.num_outstanding}, "
                f"running={self.num_running}, waiting={self.num_waiting}, kv={self.kv_used_blocks}/{self.num_gpu_blocks})")


class ClusterView:
    """The eligible replicas for one routing decision and a way to read each one's state.

    `candidates` are replica indices, in a fixed order (healthy replicas of the pools that
    serve the request's model). The cluster keeps one view and aims it at each decision
    (`aim`: the time and the candidates, the memo emptied) rather than making one per arrival.
    `view(i)` is memoised within the decision; `outstanding(i)`
    is its `num_outstanding` alone, without making a view (routers that read only the
    router's in-flight counts read it for every candidate at every arrival). `cached_blocks(i,
    req)` is the engine's real prefix-cache hit (in prefix blocks) on replica i, for routers
    that model precise, KV-event-driven cache awareness; `lora_state(i, name)` is replica i's
    adapter residency, for adapter-aware routers.
    """

    __slots__ = ("now_s", "candidates", "_read", "_cached", "_lora", "_memo", "_outstanding", "_outstandings")

    def __init__(self, now_s: float, candidates: Sequence[int], read: Callable[[int], ReplicaView],
                 cached_blocks: Callable[[int, "Request"], int],
                 lora_state: Callable[[int, str], tuple[bool, bool]] | None = None,
                 outstanding: Callable[[int], int] | None = None,
                 outstandings: Callable[[float, Sequence[int]], list[int]] | None = None) -> None:
        self.now_s = now_s
        self.candidates = candidates
        self._read = read
        self._cached = cached_blocks
        self._lora = lora_state
        self._outstanding = outstanding
        # `outstanding` of a list of replicas at a time, in one call: (now_s, candidates) -> counts
        self._outstandings = outstandings
        self._memo: dict[int, ReplicaView] = {}

    def aim(self, now_s: float, candidates: Sequence[int]) -> "ClusterView":
        """The same readers, for the next decision: at `now_s`, among `candidates`."""
        self.now_s = now_s
        self.candidates = candidates
        if self._memo:
            self._memo = {}  # (a new dict: a router may still hold the last decision's views)
        return self

    def view(self, i: int) -> ReplicaView:
        v = self._memo.get(i)
        if v is None:
            v = self._memo[i] = self._read(i)
        return v

    def outstanding(self, i: int) -> int:
        """Replica i's `num_outstanding` (the same number as `view(i).num_outstanding`)."""
        if self._outstanding is None or i in self._memo:
            return self.view(i).num_outstanding
        return self._outstanding(i)

    def outstandings(self) -> list[int]:
        """`outstanding(i)` of every candidate, in order (one call for the whole list: a
        count-reading router reads them all at every arrival)."""
        read = self._outstanding
        if read is None or self._memo:
            return [self.outstanding(i) for i in self.candidates]
        if self._outstandings is not None:
            return self._outstandings(self.now_s, self.candidates)
        return [read(i) for i in self.candidates]

    def views(self) -> list[ReplicaView]:
        return [self.view(i) for i in self.candidates]

    def cached_blocks(self, i: int, req: "Request") -> int:
        return self._cached(i, req)

    def lora_state(self, i: int, name: str) -> tuple[bool, bool]:
        """(adapter `name` on replica i's GPU or loading, a slot there could take it now), live
        (as the adapter lists vLLM exports in `vllm:lora_requests_info`)."""
        return self._lora(i, name) if self._lora is not None else (False, True)
