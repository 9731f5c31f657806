"""The CPU swap tier as seen through `KVCacheManager` (kv_cache.py).

Swapping moves a request's blocks between the GPU pool and the composed `CPUTier`
(cpu_tier.py, which tracks capacity and reclaimable copies). These methods are the pool's
side: free or pop GPU blocks and forward the rest to the tier. They are apart from allocation
and prefix caching because only swapping policies (vLLM v0, FastSwitch, ...) use them; a mixin
so the manager keeps one interface for schedulers.
"""

from __future__ import annotations

from typing import Any, Hashable

from servesim.replica.cpu_tier import CPUTier
from servesim.replica.prefix_index import Held


class CPUSwap:
    """`KVCacheManager`'s CPU-tier interface (see the module docstring)."""

    # State owned by `KVCacheManager.__init__`.
    num_free_blocks: int
    cpu: CPUTier
    _held: dict[Any, Held]

    def num_cpu_blocks_of(self, req_id: int) -> int:
        return self.cpu.num_blocks_of(req_id)

    @property
    def num_cpu_blocks(self) -> int:
        return self.cpu.num_cpu_blocks

    @property
    def num_free_cpu_blocks(self) -> int:
        return self.cpu.num_free_cpu_blocks

    def swap_out(self, req_id: int, reuse_key: Hashable | None = None) -> int | None:
        """Move a request's blocks to the CPU tier; the number of blocks to copy, or None
        (nothing changes) if the CPU tier lacks room (see `CPUTier.store`)."""
        need = self.cpu.store(req_id, self.num_blocks_of(req_id), reuse_key)
        if need is not None:
            self.free(req_id)
        return need

    def swap_in(self, req_id: int, keep_cpu_copy: bool = False) -> int | None:
        """Bring a swapped request's blocks back to the GPU; the number of blocks copied, or
        None (nothing changes) if the GPU lacks room. `keep_cpu_copy` leaves the CPU blocks
        in place as a reclaimable copy (FastSwitch)."""
        n = self.cpu.num_blocks_of(req_id)
        if n > self.num_free_blocks:
            return None
        self.cpu.load(req_id, keep_cpu_copy)
        self._pop_free(n)
        self._held[req_id] = Held(num_plain=n)
        return n

    def retain_cpu_copy(self, req_id: int, key: Hashable, max_blocks: int) -> None:
        """Keep (up to `max_blocks` of) a finished request's CPU copy for the next turn of
        `key` (a session or program); replaces that key's previous copy."""
        self.cpu.retain_copy(req_id, key, max_blocks)

    def num_cpu_copy_blocks(self) -> int:
        """CPU blocks held by reclaimable copies."""
        return self.cpu.num_copy_blocks

    def free_cpu(self, req_id: int) -> None:
        """Release a request's CPU blocks and its CPU copy."""
        self.cpu.free(req_id)

    def drop_cpu_copies(self) -> None:
        """Release every reclaimable CPU copy (end of run)."""
        self.cpu.drop_copies()
