"""Records keyed by time-series interval, spooled as a run makes them and read back in interval
order a window of intervals at a time.

The step reducer (step_reduce.py) makes, for each chunk of steps, sorted records keyed by
interval index: the busy ranges, the tokens of the steps that end in each interval and the
level integrals at interval edges; the time series (timeseries.py) makes, for each chunk of
request rows, the intervals holding arrivals and completions. A `Spool` appends each piece as
it comes, to a file when given one (so a run holds nothing per interval), else to a list.

Pieces come nearly in key order, not exactly: a chunk of steps may end inside an interval that
the next chunk continues, or value an edge that the next chunk values again (the later value
is the right one); a chunk of rows holds completions long after its arrivals. `Stream` reads a
spool back in key order, merging exactly as the whole concatenation would be merged, and holds
only what is not final yet: an entry is final once every later piece's smallest key (noted as
each piece is written) is above it. In a run that goes forward in time that is about a piece.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Busy interval ranges [k, hi] of a chunk of steps (merged where they touch).
RANGES = np.dtype([("k", np.int64), ("hi", np.int64)])
#: Prompt and output tokens of the steps ending in interval k.
TOKENS = np.dtype([("k", np.int64), ("prompt", np.float64), ("output", np.float64)])
#: Integral of each level (step_reduce.LEVELS) from 0 to edge k x interval.
MARKS = np.dtype([("k", np.int64), ("v", np.float64, (3,))])
#: Arrivals and completions in interval k.
POINTS = np.dtype([("k", np.int64), ("arrivals", np.int64), ("finished", np.int64)])


def append_to(path: Path, *arrays: np.ndarray) -> None:
    """Append the arrays' bytes to the file at `path`, opened for this write only (the first makes
    it): a run keeps several such files per replica, and files held open would meet the
    open-files limit (1,024 by default on Linux) at about 250 replicas; files made at the start
    cost a cluster's idle spares about 1 ms each."""
    with open(path, "ab") as f:
        for values in arrays:
            f.write(np.ascontiguousarray(values).data)  # (the array's buffer: no copy)


#: A run's `HeldBytes`: the step ends of about 60 chunks of steps (128 kB each) with their partials,
#: all a 4,000-request matrix cell makes (orca sessions 1: 36 chunks; 8 replicas: 2-3 each); also
#: the most a long run's peak memory grows by it.
HELD_BYTES = 8 << 20


class HeldBytes:
    """What a run's spools and step-end lists may hold in memory beyond each one's first piece,
    before it goes to its file (shared by every replica's: the run's memory stays bounded however
    many replicas there are). A file made costs more than its bytes: about 15-40 us of CPU on a
    host's disk, 0.2-0.5 ms in some temporary folders (measured on the 2-core host's /tmp), and
    a run of a few chunks a replica made four a replica (8 replicas: 32)."""

    __slots__ = ("left",)

    def __init__(self, nbytes: int | None = None) -> None:
        self.left = HELD_BYTES if nbytes is None else nbytes

    def take(self, nbytes: int) -> bool:
        """Hold `nbytes` more if the budget has them."""
        if nbytes > self.left:
            return False
        self.left -= nbytes
        return True

    def give(self, nbytes: int) -> None:
        """Held bytes written to a file: room again."""
        self.left += nbytes


class HeldFile:
    """Arrays appended to the file at `path` (made when they spill: see `append_to`), the first
    held in memory, and later ones while `held` (the run's `HeldBytes`; none: the first alone)
    has room; the array that finds none goes to the file with those held (their bytes given
    back), and every later one after them: a run of a few chunks of steps, as most short runs
    are, makes no file (each file made, written, read back and deleted costs about 0.1-0.5 ms).
    Without a `path` every array is held."""

    def __init__(self, path: Path | None = None, held: HeldBytes | None = None) -> None:
        self.path = path
        self._budget = held if held is not None else HeldBytes(0)
        self.held: list[np.ndarray] = []  # the arrays not in the file
        self.spilled = False  # are the arrays in the file?

    def append(self, values: np.ndarray) -> None:
        if self.path is None or not self.spilled and (not self.held or self._budget.take(values.nbytes)):
            self.held.append(values)
        else:
            append_to(self.path, *self.held, values)
            self._budget.give(sum(a.nbytes for a in self.held[1:]))  # (the first was held without it)
            self.held = []
            self.spilled = True

    def hold_no_more(self) -> None:
        """Arrays held beyond the first go to the file now, and the run's budget is spent (reducers
        handed to the step log's helper process: `StepReducer.hold_no_more`)."""
        self._budget.left = 0
        if self.path is not None and len(self.held) > 1:
            append_to(self.path, *self.held)
            self.held = []
            self.spilled = True

    def held_nbytes(self) -> int:
        """Bytes of the arrays held."""
        return sum(a.nbytes for a in self.held)


class Spool(HeldFile):
    """Pieces of records of one dtype (a field `k` first), appended in order: held, or in a
    file (`HeldFile`'s rule)."""

    def __init__(self, dtype: np.dtype, path: Path | None = None, held: HeldBytes | None = None) -> None:
        super().__init__(path, held)
        self.dtype = dtype
        self.lengths: list[int] = []  # records of each piece
        self.min_keys: list[int] = []  # smallest key of each piece

    def append(self, records: np.ndarray) -> None:
        if not len(records):
            return
        self.lengths.append(len(records))
        self.min_keys.append(int(records["k"].min()))
        super().append(records)

    def pieces(self):
        """Every piece, in the order appended."""
        if not self.spilled:
            yield from self.held
            return
        with open(self.path, "rb") as f:
            for n in self.lengths:
                yield np.fromfile(f, self.dtype, n)

    def nbytes(self) -> int:
        """Bytes held in memory (the pieces without a file, and each piece's length and key)."""
        return self.held_nbytes() + 16 * len(self.lengths)


class Stream:
    """A spool's records in key order, taken a window of keys at a time. `last_wins`: of the
    records with one key only the last appended is kept (an edge valued again); otherwise all
    are kept, in the order appended (stable)."""

    def __init__(self, spool: Spool, last_wins: bool = False) -> None:
        self._pieces = spool.pieces()
        mins = np.asarray(spool.min_keys, dtype=np.int64)
        self._later_min = np.minimum.accumulate(mins[::-1])[::-1]  # smallest key of piece i or later
        self._next = 0  # pieces read so far
        self._held = np.empty(0, dtype=spool.dtype)  # read, in key order, not taken yet
        self._last_wins = last_wins

    def next_key(self) -> int | None:
        """The smallest key not taken yet (None: the stream is over)."""
        keys = [int(self._held["k"][0])] if len(self._held) else []
        if self._next < len(self._later_min):
            keys.append(int(self._later_min[self._next]))
        return min(keys, default=None)

    def take(self, end: int | None) -> np.ndarray:
        """Every record with key < `end` (every one left: None), in key order."""
        parts = [self._held]
        while self._next < len(self._later_min) and (end is None or self._later_min[self._next] < end):
            parts.append(next(self._pieces))
            self._next += 1
        held = self._order(np.concatenate(parts)) if len(parts) > 1 else self._held
        cut = len(held) if end is None else int(np.searchsorted(held["k"], end))
        self._held = held[cut:]
        return held[:cut]

    def _order(self, records: np.ndarray) -> np.ndarray:
        keys = records["k"]
        if self._last_wins:
            if (keys[1:] > keys[:-1]).all():
                return records
            last = len(keys) - 1 - np.unique(keys[::-1], return_index=True)[1]  # sorted by key
            return records[last]
        if (keys[1:] >= keys[:-1]).all():
            return records
        return records[np.argsort(keys, kind="stable")]


class SeriesParts:
    """One replica's time-series partials: three spools (files `<prefix>.ranges` etc. when
    given a prefix, else in memory)."""

    def __init__(self, prefix: Path | None = None, held: HeldBytes | None = None) -> None:
        def path(kind: str) -> Path | None:
            return None if prefix is None else prefix.with_name(f"{prefix.name}.{kind}")
        self.ranges = Spool(RANGES, path("ranges"), held)
        self.tokens = Spool(TOKENS, path("tokens"), held)
        self.marks = Spool(MARKS, path("marks"), held)

    def add(self, lo: np.ndarray, hi: np.ndarray, at: np.ndarray, prompt: np.ndarray, output: np.ndarray,
            edge_k: np.ndarray, values: np.ndarray) -> None:
        """A chunk of steps' busy ranges [lo, hi], tokens per interval `at`, and level
        integrals `values` (one row of 3 per edge) at edges `edge_k`."""
        self.ranges.append(records(RANGES, k=lo, hi=hi))
        self.tokens.append(records(TOKENS, k=at, prompt=prompt, output=output))
        self.marks.append(records(MARKS, k=edge_k, v=values))

    def hold_no_more(self) -> None:
        for spool in (self.ranges, self.tokens, self.marks):
            spool.hold_no_more()

    def nbytes(self) -> int:
        return sum(s.nbytes() for s in (self.ranges, self.tokens, self.marks))


def records(dtype: np.dtype, **fields: np.ndarray) -> np.ndarray:
    """A record array of `dtype` from its fields' columns."""
    out = np.empty(len(fields["k"]), dtype=dtype)
    for name, values in fields.items():
        out[name] = values
    return out
