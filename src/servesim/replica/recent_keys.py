"""The built run keys of the last requests a KV cache freed, for a conversation's next turn.

A next turn's context starts with its previous turn's; building its run keys from the previous
turn's (`BlockKeys.reuse`) rather than packing the whole context again keeps a long session's
turns O(new tokens). The store is bounded: a key list is about 40 bytes per run. (A generated
conversation's ids are ranges, which the prefix cache registers by range without building the
list: its keys come here only where something read them one by one, the radix cache's idents.)
"""

from __future__ import annotations

from collections.abc import Hashable

from servesim.replica.block_keys import BlockKeys

# Large enough for the turns that finish during a think time (`examples/sessions.yaml`, 4,000
# requests: 2,793 next turns reuse their keys with 64 kept, 2,820 with 128, 2,255 with 32).
RECENT_KEYS = 64
# Shorter key lists are cheap to build again: not worth an entry.
MIN_RUNS = 64
OFFERED = "offered"  # (the fourth field of an entry `offer` made: its list is still the request's)


class RecentKeys:
    """Built run keys by first hash id, the most recent `capacity` kept."""

    def __init__(self) -> None:
        self._by_first: dict[Hashable, tuple] = {}
        self.capacity = 0  # RECENT_KEYS per KV cache using the store (`shared`)

    def shared(self) -> RecentKeys:
        """This store, with room for one more KV cache's turns. The replicas of a pool share
        one, so a next turn routed to another replica than its previous turn's builds its keys
        from that turn's too (the keys are the same whichever cache builds them)."""
        self.capacity += RECENT_KEYS
        return self

    def __bool__(self) -> bool:
        return bool(self._by_first)

    def clear(self) -> None:
        """Forget every entry (the run is over)."""
        self._by_first.clear()

    def keep(self, keys: BlockKeys) -> None:
        built = keys.take_run_keys()
        if built is None or len(built[2]) < MIN_RUNS:
            return
        self._put(keys.first_id(), built)  # (not built[0][0]: an `IdRanges` indexed is a Python call)

    def offer(self, keys: BlockKeys) -> None:
        """Keep a request's built keys when it finishes inside a stretch, shared: its blocks are
        freed, and its keys kept (`keep`), when the stretch is applied, which at many replicas
        often comes after its next turn reached another replica (2,069 of vllm sessions' 4,234
        lookups at 8 replicas found nothing, 1,371 at 1, about its first turns: those then
        packed their whole context). The request still reads the list: `reuse_into` copies it."""
        built = keys.built_run_keys()
        if built is None or len(built[2]) < MIN_RUNS:
            return
        self._put(keys.first_id(), (*built, OFFERED))

    def _put(self, first: Hashable, built: tuple) -> None:
        recent = self._by_first
        recent.pop(first, None)
        recent[first] = built
        if len(recent) > self.capacity:
            del recent[next(iter(recent))]

    def reuse_into(self, keys: BlockKeys) -> None:
        """Let `keys` take a kept parent's built keys if its ids extend them (used once)."""
        first = keys.first_id()
        built = self._by_first.get(first)
        if built is not None:
            if len(built) == 4:  # (offered: the finished request's own list, copied)
                built = (built[0], built[1], built[2][:])
            if keys.reuse(built):
                del self._by_first[first]
