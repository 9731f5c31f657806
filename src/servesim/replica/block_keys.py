"""A request's prefix keys at the engine's block size, kept as runs of the trace's hash blocks.

`hash_ids[m]` identifies tokens [0, (m+1)*H) (H = `hash_block_tokens`); a KV block ending at
token e lies in hash block m = (e-1)//H, so `(hash_ids[m], e)` identifies tokens [0, e) for any
block size. The KV blocks under one hash id form a contiguous run of positions (H/bs of them,
e.g. 32 for Mooncake's 512-token hashes and 16-token blocks), so the prefix cache indexes runs
(`run_keys`: (hash id, first position)) rather than blocks; the per-block key tuple is only
built when a policy asks for it (sequence access), and `block_idents` gives a cheaper per-block
identity (the run key repeated over its run) for the radix cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain, repeat
from operator import sub
from typing import Any

from servesim.replica.packed_keys import id_keys, pack_ints, pack_long, pack_ranges
from servesim.workload.prefix import IdRanges


class BlockKeys(Sequence):
    """The keys `(hash_ids[(e-1)//H], e)` of a request's first `len(self)` KV blocks (e = end
    token), as runs: run i holds positions [starts[i], ends[i]) under key `run_keys[i]`."""

    __slots__ = ("run_keys", "starts", "ends", "_ids", "num_blocks", "_block_size", "_tuple", "_idents")

    def __init__(self, hash_ids: Sequence, hash_block_tokens: int, block_size: int) -> None:
        H = hash_block_tokens
        # len(self), read as an attribute on hot paths (len() of a BlockKeys is a Python call)
        # (an `IdRanges`' length read from its bounds: its `__len__` is a Python call)
        num_ids = hash_ids.bounds[-1] if type(hash_ids) is IdRanges else len(hash_ids)
        self.num_blocks = n = num_ids * H // block_size
        # hash block m holds the positions p with m*H < (p+1)*bs <= (m+1)*H: [m*H//bs, (m+1)*H//bs)
        if H % block_size == 0:  # the usual case: H/bs blocks per hash id, no empty hash block
            # No copies: a request keeps its keys for its lifetime, and a copy per block (ids,
            # starts, ends, packed keys) was most of a multi-turn run's memory.
            # (an `IdRanges` kept as it is: its ranges are read when the run keys are built)
            self._ids = hash_ids if type(hash_ids) is tuple or type(hash_ids) is IdRanges else tuple(hash_ids)
            r = H // block_size
            self.starts: Sequence[int] = range(0, n, r)
            self.ends: Sequence[int] = range(r, n + 1, r)
        else:
            ids, starts = [], []
            a = 0
            for m, h in enumerate(hash_ids):
                b = (m + 1) * H // block_size
                if b > a:
                    ids.append(h)
                    starts.append(a)
                    a = b
            self._ids, self.starts = tuple(ids), starts
            self.ends = starts[1:] + [n] if n else []
        self.run_keys = RunKeys(self._ids, self.starts)
        self._block_size = block_size
        self._tuple: tuple | None = None
        self._idents: list | None = None  # `block_idents`, kept until `release`

    def __len__(self) -> int:
        return self.num_blocks

    def release(self) -> None:
        """Drop what was built for lookups (the request's blocks are gone)."""
        self.run_keys.release()
        self._tuple = None
        self._idents = None

    def built_run_keys(self) -> tuple[tuple, int, list] | None:
        """(ids, run length, run keys) if the run keys are built, packed ints, over runs of
        one length: what `reuse` takes. The list is still these keys' (`take_run_keys`)."""
        lst = self.run_keys._list
        if lst is None or type(self.starts) is not range or not lst or type(lst[0]) is not int:
            return None
        return self._ids, self.starts.step, lst

    def take_run_keys(self) -> tuple[tuple, int, list] | None:
        """`built_run_keys`, the list given to the caller: these keys forget it (and build it again if read)."""
        if (built := self.built_run_keys()) is not None:
            self.run_keys._list = None
        return built

    def reuse(self, built: tuple[tuple, int, list]) -> bool:
        """Build the run keys from another request's (`take_run_keys`) when its ids start
        these (a conversation's next turn extends the previous turn's context): its keys for
        the common ids, packed ones for the rest. False (nothing done) if they do not. The
        list in `built` becomes these keys' own (`take_run_keys` gave it away)."""
        ids, r, lst = built
        rk = self.run_keys
        mine = self._ids
        # (the lengths read once, an `IdRanges`' from its bounds: its `__len__` is a Python call)
        num_ids = ids.bounds[-1] if type(ids) is IdRanges else len(ids)
        num_mine = mine.bounds[-1] if type(mine) is IdRanges else len(mine)
        n = num_mine if num_mine < num_ids else num_ids
        if rk._list is not None or type(self.starts) is not range or self.starts.step != r or n < 2:
            return False
        # Packed as `RunKeys` would (all ids ints): the common ids equal the other's, which
        # are ints as its keys are packed, so only the new ones are checked (choice: an id of
        # another type equal to an int, 5.0 for 5, counts as that int here).
        if type(mine) is IdRanges and type(ids) is IdRanges and n == num_ids and mine.extends(ids):
            # (ids from `HashIds`, ints: these start with all the other's, seen from their ranges'
            # starts; the new ids are one fresh range when the last range starts at n)
            del lst[n:]  # (its keys past its ids, if any: see below)
            if mine.bounds[-2] == n:  # (so its last range's first id is mine[n])
                lst += id_keys(mine.firsts[-1], num_mine - n, n * r, r)
            elif num_mine > n:
                rest = mine[n:]  # (an `IdRanges`: packed range by range)
                lst += pack_ranges(rest.bounds, rest.firsts, self.starts[n:])
            rk._list = lst
            return True
        if type(mine) is tuple and type(ids) is tuple and mine[n - 1] != ids[n - 1]:
            return False  # (the last common id differs, the usual miss of a trace's requests sharing their first ids)
        new = mine[n:]  # (sliced once: the type check and the packing read it)
        if (mine[:n] != ids if n == num_ids else mine[:n] != ids[:n]) or not set(map(type, new)) <= {int}:
            return False
        if n < len(lst):
            del lst[n:]  # (packed in place: see above)
        if len(new) > 8 and new[-1] - new[0] == len(new) - 1 and new == tuple(range(new[0], new[-1] + 1)):
            # the usual case: the turn's new ids are one fresh range (`HashIds.fresh`)
            lst += id_keys(new[0], len(new), n * r, r)
        else:
            lst += pack_ints(new, self.starts[n:])
        rk._list = lst
        return True

    def first_id(self):
        """The first hash id (None without any)."""
        ids = self._ids
        if type(ids) is IdRanges:  # (its first range's first id: indexing and len() of an
            # `IdRanges` are Python calls, about 1,000 and 300 instructions; read at every free)
            return ids.firsts[0] if ids.firsts else None
        return ids[0] if ids else None

    def __bool__(self) -> bool:
        return self.num_blocks > 0

    def as_tuple(self) -> tuple:
        if self._tuple is None:
            bs = self._block_size
            keys = []
            for h, a, b in zip(self._ids, self.starts, self.ends):
                keys += [(h, e) for e in range((a + 1) * bs, b * bs + 1, bs)]
            self._tuple = tuple(keys)
        return self._tuple

    def __getitem__(self, i):
        return self.as_tuple()[i]

    def __iter__(self):
        return iter(self.as_tuple())

    def __hash__(self) -> int:
        return hash(self.as_tuple())

    def __eq__(self, other) -> bool:
        return self.as_tuple() == _tuple_of(other)

    def __lt__(self, other) -> bool:
        return self.as_tuple() < _tuple_of(other)

    def __le__(self, other) -> bool:
        return self.as_tuple() <= _tuple_of(other)

    def __gt__(self, other) -> bool:
        return self.as_tuple() > _tuple_of(other)

    def __ge__(self, other) -> bool:
        return self.as_tuple() >= _tuple_of(other)


class RunKeys(Sequence):
    """The run keys of a `BlockKeys`: run i's key is (hash id, first position), packed into one
    int when the ids are ints (`packed_keys.py`: ints hash and compare faster). Built on first
    read and kept until `release` (the KV cache releases them when the request's blocks are
    freed): kept for every request of a run, they were most of a multi-turn run's memory (40
    bytes per run per request)."""

    __slots__ = ("_ids", "_starts", "_list")

    def __init__(self, ids: tuple, starts: Sequence[int]) -> None:
        self._ids = ids
        self._starts = starts
        self._list: list | None = None

    def _build(self) -> list:
        ids, starts = self._ids, self._starts
        if type(ids) is IdRanges and type(starts) is range:  # (`HashIds`' ids: a few ranges of ints)
            lst = pack_ranges(ids.bounds, ids.firsts, starts)
        elif type(ids) is IdRanges or set(map(type, ids)) <= {int}:
            lst = pack_long(ids, starts) if len(ids) > 64 and type(starts) is range else None
            if lst is None:
                lst = pack_ints(ids, starts)
        else:
            lst = list(zip(ids, self._starts))
        self._list = lst
        return lst

    def release(self) -> None:
        self._list = None

    def as_list(self) -> list:
        lst = self._list
        return lst if lst is not None else self._build()

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, i):
        lst = self._list
        return (lst if lst is not None else self._build())[i]

    def __iter__(self):
        lst = self._list
        return iter(lst if lst is not None else self._build())


def _tuple_of(keys) -> tuple:
    return keys.as_tuple() if type(keys) is BlockKeys else tuple(keys)


def block_keys(req: Any, block_size: int, shared_only: bool = False) -> BlockKeys:
    """The request's prefix keys at `block_size` (from its chained hash ids); `shared_only`:
    of its leading ids that another request may share only (`Request.num_shared_hash_ids`,
    when known: the blocks of the rest would be registered, evicted and dropped again without
    ever being hit; `Engine.shared_keys_only` says when that is exact)."""
    ids = req.hash_ids
    if shared_only and (n := req.num_shared_hash_ids) is not None and n < len(ids):
        ids = ids[:n]
    return BlockKeys(ids, req.hash_block_tokens, block_size)


def keyed_pairs(reqs: Sequence, ctx1: Sequence[int]) -> list[tuple[Any, int]]:
    """(request, ctx1) of those of `reqs` with prefix keys, for a stretch's registrations
    (`bool(keys)` without `BlockKeys.__bool__`'s Python call)."""
    return [(r, c) for r, c in zip(reqs, ctx1)
            if (k := r.kv_block_keys) is not None and (k.num_blocks if type(k) is BlockKeys else k)]


def runs_of(keys: Sequence) -> tuple[Sequence, Sequence[int], Sequence[int]]:
    """(run keys, first positions, end positions) of any key sequence. A plain tuple of keys (as
    tests and policies may set) is one run per key, keyed (None, key); its keys are taken to
    identify their position, as those from `block_keys` do."""
    if type(keys) is BlockKeys:
        return keys.run_keys.as_list(), keys.starts, keys.ends
    return [(None, k) for k in keys], range(len(keys)), range(1, len(keys) + 1)


def run_values(keys: Sequence, runs: Sequence) -> Sequence:
    """The run keys `runs` stands for: itself, or, for a range of run indices (`_runs_from`'s answer
    for ids that are ranges), those of `keys`' list (built if it is not)."""
    return keys.run_keys.as_list()[runs.start:runs.stop] if type(runs) is range else runs


def block_idents(keys: Sequence) -> list:
    """One hashable per block such that two requests' blocks at the same position are equal
    exactly when their keys are: a `BlockKeys`' run key repeated over its run (a run key and a
    position name one (hash id, end token) key), else the keys themselves (as a list).

    A `BlockKeys`' list is built once and kept until its `release` (read only: callers slice
    it). The radix cache reads it at a request's match, at each prefill chunk's insert and at
    its finish (4.5 times a Mooncake request, ~1,370 blocks each): built every time, that was
    27 % of sglang's mooncake cell."""
    if type(keys) is not BlockKeys:
        return list(keys)
    ids = keys._idents
    if ids is None:
        rks = keys.run_keys[:]
        if len(rks) == len(keys):
            ids = rks
        else:
            ids = list(chain.from_iterable(map(repeat, rks, map(sub, keys.ends, keys.starts))))
        keys._idents = ids
    return ids
