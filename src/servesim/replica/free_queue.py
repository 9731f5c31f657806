"""The LRU free queue of the paged KV cache (a part of `KVCacheManager`, kv_cache.py).

Head = next block to reuse. Entries, oldest first:
- an int: a run of blocks without a key (interchangeable, so only counted);
- a `Tail`: the full computed unique blocks of a preempted request, which only it can hit
  when admitted again; popping evicts its last blocks first, so a leading run survives;
- [stamp, Group, s0, s1, live]: a prefix group's keyed blocks s1-1 down to s0 that still carry
  the stamp (`prefix_groups.py`), `live` of them; those hit since carry another and are skipped
  (lazy deletion). The hit lowers `live` (`Group.hit`, told by `entries`): an entry whose
  blocks a next turn took back is passed over without a search of its slots (a sessions cell
  at one replica met 2,718 such in its pops and 1,604 in `head_evicts`, each a search of
  hundreds of slots), and `head_evicts` counts none.
The queue evicts keyed blocks from the prefix index as it pops them; `KVCacheManager` keeps the
free-block count.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from servesim.replica.prefix_groups import Group
from servesim.replica.prefix_index import PrefixIndex


@dataclass(slots=True)
class Tail:
    """A free-queue run of one preempted request's unique blocks (positions start..start+count)."""

    req_id: int
    count: int


class FreeQueue:
    """Free blocks in reuse order (see the module docstring)."""

    def __init__(self, num_blocks: int, prefix: PrefixIndex) -> None:
        self._q: deque[Any] = deque([num_blocks])
        self._stamp = 0
        self._prefix = prefix
        self.tails: dict[int, Tail] = {}  # live tagged runs of preempted requests, by owner
        self.entries: dict[int, list] = {}  # the group entries in the queue, by stamp
        prefix.queued = self.entries  # (its hits lower their live counts)

    def push_plain(self, n: int) -> None:
        q = self._q
        if q and type(q[-1]) is int:
            q[-1] += n
        else:
            q.append(n)

    def push_tail(self, req_id: int, n: int) -> None:
        tail = self.tails[req_id] = Tail(req_id, n)
        self._q.append(tail)

    def release(self, group: Group, s0: int, s1: int) -> int:
        """Drop a reference on the group's blocks [s0, s1); those whose count reaches 0 enter
        the queue as one entry. Returns how many."""
        self._stamp += 1
        n = group.release(s0, s1, self._stamp)
        if n:
            entry = self.entries[self._stamp] = [self._stamp, group, s0, s1, n]
            self._q.append(entry)
        return n

    def head_evicts(self, n: int, groups: list[Group]) -> bool:
        """Would popping `n` blocks from the head evict a block of one of `groups`? (`pop`'s
        walk without its changes: a group entry holds the slots still carrying its stamp.)"""
        for head in self._q:
            if n <= 0:
                return False
            kind = type(head)
            if kind is int:
                n -= head
            elif kind is Tail:
                n -= head.count
            else:
                c = head[4]  # (its blocks still in the queue)
                if c and head[1] in groups:
                    return True
                n -= c
        return False

    def pop(self, n: int) -> None:
        """Take `n` blocks from the head, evicting keyed ones from the cache (caller checked
        that there are `n`)."""
        q = self._q
        while n > 0:
            head = q[0]
            kind = type(head)
            if kind is int:
                if head > n:
                    q[0] = head - n
                    return
                q.popleft()
                n -= head
            elif kind is Tail:  # evicts the run's last blocks first: a leading run survives
                if head.count > n:
                    head.count -= n
                    return
                q.popleft()
                n -= head.count
                if self.tails.get(head.req_id) is head:
                    del self.tails[head.req_id]
            else:
                stamp, group, s0, s1, live = head
                k, s1 = group.evict(s0, s1, stamp, n, live) if live else (0, s0)  # (none left: no search)
                n -= k
                if k and group.num_cached == 0:
                    self._prefix.retire(group)
                if n > 0 or s1 <= s0 or k == live:
                    q.popleft()
                    del self.entries[stamp]
                else:
                    head[3] = s1
                    head[4] = live - k
