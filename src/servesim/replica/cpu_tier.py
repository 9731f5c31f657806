"""The CPU tier of a replica's KV cache, tracked by capacity (a part of `KVCacheManager`).

It holds (a) the blocks of swapped-out requests and (b) reclaimable copies: a request's CPU
copy kept after its swap-in ("req", id) and a finished turn's copy kept for its conversation
or program ("ctx", key). A copy makes the next swap-out of the same context move only the
blocks computed since (FastSwitch's KV reuse); copies are reclaimed least recently stored
first when the tier needs room.
"""

from __future__ import annotations

from typing import Hashable


class CPUTier:
    """Swap space and reclaimable copies, in blocks (see the module docstring)."""

    def __init__(self, num_cpu_blocks: int) -> None:
        self.num_cpu_blocks = num_cpu_blocks
        self.num_free_cpu_blocks = num_cpu_blocks
        self._held: dict[int, int] = {}
        self._copies: dict[Hashable, int] = {}  # insertion order = reclaim order
        self.num_copy_blocks = 0

    def num_blocks_of(self, req_id: int) -> int:
        return self._held.get(req_id, 0)

    def store(self, req_id: int, num_blocks: int, reuse_key: Hashable | None) -> int | None:
        """Take `num_blocks` for a swapped-out request; the number that must be copied, or
        None (nothing changes) if the tier lacks room. A CPU copy of the request, or else the
        retained copy under `reuse_key`, covers its first blocks, which need no copy."""
        copies = self._copies
        src = ("req", req_id)
        if src not in copies:
            src = ("ctx", reuse_key) if reuse_key is not None and ("ctx", reuse_key) in copies else None
        have = copies.get(src, 0) if src is not None else 0
        need = num_blocks - min(have, num_blocks)
        if need > self.num_free_cpu_blocks + self.num_copy_blocks - have:
            return None
        if src is not None:
            self._release_copy(src)
        self._reserve(num_blocks)
        self._held[req_id] = num_blocks
        return need

    def load(self, req_id: int, keep_copy: bool) -> None:
        """The request's blocks went back to the GPU; `keep_copy` leaves them as a copy."""
        n = self._held.pop(req_id)
        if keep_copy:
            self._copies[("req", req_id)] = n
            self.num_copy_blocks += n
        else:
            self.num_free_cpu_blocks += n

    def retain_copy(self, req_id: int, key: Hashable, max_blocks: int) -> None:
        """Keep (up to `max_blocks` of) a finished request's copy for the next turn of `key`
        (a session or program); replaces that key's previous copy."""
        have = self._copies.get(("req", req_id), 0)
        if not have:
            return
        self._release_copy(("req", req_id))
        if ("ctx", key) in self._copies:
            self._release_copy(("ctx", key))
        keep = min(have, max_blocks)
        if keep > 0:
            self._reserve(keep)
            self._copies[("ctx", key)] = keep
            self.num_copy_blocks += keep

    def free(self, req_id: int) -> None:
        """Release a request's CPU blocks and its copy."""
        self.num_free_cpu_blocks += self._held.pop(req_id, 0)
        if ("req", req_id) in self._copies:
            self._release_copy(("req", req_id))

    def drop_copies(self) -> None:
        for key in list(self._copies):
            self._release_copy(key)

    def check_all_free(self) -> None:
        if self._held or self.num_free_cpu_blocks != self.num_cpu_blocks:
            raise AssertionError("CPU swap blocks leaked")

    def _release_copy(self, key: Hashable) -> None:
        n = self._copies.pop(key)
        self.num_copy_blocks -= n
        self.num_free_cpu_blocks += n

    def _reserve(self, n: int) -> None:
        """Take `n` free blocks, reclaiming the oldest copies first if needed (caller checked)."""
        while n > self.num_free_cpu_blocks:
            self._release_copy(next(iter(self._copies)))
        self.num_free_cpu_blocks -= n
