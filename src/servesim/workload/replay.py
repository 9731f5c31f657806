"""Open-loop replay of a trace file: each row becomes one request at its (scaled) timestamp."""

from __future__ import annotations

from array import array
from itertools import repeat
from typing import Iterator

import numpy as np

from servesim.errors import InputError
from servesim.workload.attributes import AttributeMix
from servesim.workload.config import WorkloadConfig
from servesim.workload.request import Request
from servesim.workload.trace_arrays import hash_ids, read_rows
from servesim.workload.traces.readers import Row, TraceReader
from servesim.workload.traces.registry import resolve_trace
from servesim.workload.traces.schema import DEFAULT_HASH_BLOCK_TOKENS


class TraceWorkload:
    """Streams a trace; arrival_s = (timestamp - first timestamp - start_s) / speedup."""

    closed_loop = False  # a replay is open loop

    def __init__(self, config: WorkloadConfig, seed: np.random.SeedSequence):
        assert config.trace is not None
        self._cfg = config
        self._trace = config.trace
        path, display, shipped = resolve_trace(self._trace.name)
        if shipped is not None and not shipped.has_arrival:
            raise InputError(
                f"trace {shipped.name!r} has no arrival times; use it as "
                f"`lengths: {{dataset: {shipped.name}}}` with an arrival process"
            )
        self._reader = TraceReader(path, display_name=display, skip_bad_rows=self._trace.skip_bad_rows)
        self._attrs = AttributeMix(config.attributes, seed.spawn(1)[0])
        # a shipped trace's rows as an array (trace_arrays.py), when nothing is drawn per request
        self._rows = None if self._attrs.active else read_rows(shipped)
        limit = config.num_requests
        whole = shipped is not None and self._trace.start_s == 0 and self._trace.end_s is None and config.duration_s is None
        if whole and shipped is not None:
            limit = min(limit, shipped.rows) if limit else shipped.rows
        self.expected_num_requests: int | None = limit

    @property
    def skipped_rows(self) -> int:
        """Malformed rows skipped so far (only with trace.skip_bad_rows)."""
        return self._reader.skipped_rows

    def arrivals(self) -> Iterator[Request]:
        return self._row_arrivals() if self._rows is None else self._array_arrivals(self._rows)

    def _array_arrivals(self, arrays) -> Iterator[Request]:
        """The requests `_row_arrivals` makes from a shipped trace's rows, from its arrays: the
        same float operations on each time, made a column at a time."""
        rows, runs = arrays
        start, end = self._trace.start_s, self._trace.end_s
        limit, duration = self._cfg.num_requests, self._cfg.duration_s
        rel = rows["arrival_s"] - rows["arrival_s"][:1]
        first = int(np.searchsorted(rel, start, side="left"))  # rows before start_s are skipped (times ascend)
        stop = len(rel) if end is None else int(np.searchsorted(rel, end, side="right"))
        arrival = (rel[first:stop] - start) / self._trace.speedup
        if duration is not None:
            arrival = arrival[:int(np.searchsorted(arrival, duration, side="right"))]
        n = len(arrival) if limit is None else min(len(arrival), limit)
        hashes, shared = (repeat(()), None) if runs is None else _hash_tuples(rows["num_hash_ids"], runs, first,
                                                                              first + n)
        rows = rows[first:first + n]
        reqs = map(Request, range(n), arrival[:n].tolist(), np.maximum(rows["prompt_len"], 1).tolist(),
                   np.maximum(rows["output_len"], 1).tolist(), hashes, repeat(DEFAULT_HASH_BLOCK_TOKENS))
        return reqs if shared is None else map(_with_shared, reqs, shared)

    def _replayed(self, reader: TraceReader) -> Iterator[tuple[float, Row]]:
        """(arrival_s, row) of the rows the replay keeps: the window, speedup, duration and
        request limit applied to the reader's rows in file order."""
        start, end = self._trace.start_s, self._trace.end_s
        speedup = self._trace.speedup
        limit = self._cfg.num_requests
        duration = self._cfg.duration_s
        first: float | None = None
        n = 0
        for row in reader.rows():
            t = row[0]
            if t is None:
                raise InputError(f"{reader.display_name}: no arrival-time column (arrival_s, timestamp, TIMESTAMP)")
            if first is None:
                first = t
            rel = t - first
            if rel < start:
                continue
            if end is not None and rel > end:
                return
            arrival = (rel - start) / speedup
            if (duration is not None and arrival > duration) or (limit is not None and n >= limit):
                return
            n += 1
            yield arrival, row

    def _row_arrivals(self) -> Iterator[Request]:
        attrs = self._attrs
        # A file is streamed, so which ids later rows share comes from a first pass over it
        # (`shared_file_ids`, its own reader: the same rows skipped); each row of the second
        # pass then gets the count the arrays' replay gives it (`shared_counts`).
        first_pass = TraceReader(self._reader.path, display_name=self._reader.display_name,
                                 skip_bad_rows=self._trace.skip_bad_rows)
        shared = shared_file_ids(self._replayed(first_pass))
        for next_id, (arrival, row) in enumerate(self._replayed(self._reader)):
            _, prompt, output, hashes, block, row_attrs = row
            req = Request(next_id, arrival, max(prompt, 1), max(output, 1), hashes, block)
            if shared is not None:
                req.num_shared_hash_ids = _shared_count(hashes, shared)
            if attrs.active:
                for key, value in attrs.draw().items():
                    setattr(req, key, value)
            if row_attrs:
                for key, value in row_attrs.items():
                    setattr(req, key, value)
            yield req

    def on_request_done(self, req: Request, now_s: float) -> list[Request]:
        return []  # a replay is open loop


def _hash_tuples(counts: np.ndarray, runs: np.ndarray, first: int,
                 stop: int) -> tuple[Iterator[tuple[int, ...]], list[int]]:
    """The hash ids of rows [first, stop) as the tuples of ints the reader parses (`counts`:
    every row's number of ids, `runs`: all rows' ids in file order, as `id_runs`): the rows' ids become one
    tuple of ints, then each row's is a slice of it (a tuple too); with each row's
    `Request.num_shared_hash_ids` (`shared_counts`)."""
    ends = np.concatenate(([0], np.cumsum(counts, dtype=np.int64)))[first:stop + 1]
    replayed = hash_ids(runs, int(ends[0]), int(ends[-1]))
    flat = tuple(replayed.tolist())
    ends = ends - ends[0]
    shared = shared_counts(replayed, ends)
    ends = ends.tolist()
    return map(flat.__getitem__, map(slice, ends[:-1], ends[1:])), shared


def shared_counts(ids: np.ndarray, ends: np.ndarray) -> list[int]:
    """For each row [ends[i], ends[i + 1]) of `ids` (every replayed request's hash ids, in order):
    how many leading ids reach its last id that appears more than once among all of them, at
    least 1 when it has any (so a request with ids keeps prefix keys, which policies test for).

    Why: a KV block's key is (hash id, position), so only a request whose ids include the same
    id can hit a block registered under it. The ids after the last shared one are this
    request's alone: their blocks can be hit by no other request, and by itself only after a
    preemption, which finds them as its own surviving blocks either way (`free_preempted`).
    Counting ids by value (not by position too) only keeps more."""
    n = len(ids)
    if not n:
        return [0] * (len(ends) - 1)
    lo, hi = int(ids.min()), int(ids.max())
    if lo >= 0 and hi < 4 * n + 1024:  # (small ids, as Mooncake's: counted by value, 1 ms where the sort took 9)
        repeated = np.bincount(ids)[ids] > 1
    else:
        _, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
        repeated = counts[inverse.reshape(-1)] > 1
    # the end (index + 1) of the last shared id at or before each position
    last = np.maximum.accumulate(np.where(repeated, np.arange(1, n + 1), 0))
    starts, stops = ends[:-1], ends[1:]
    upto = last[np.maximum(stops - 1, 0)] - starts  # (leading ids to the row's last shared one; <= 0: none)
    return np.where(stops > starts, np.maximum(upto, 1), 0).tolist()


def _with_shared(req: Request, num_shared: int) -> Request:
    req.num_shared_hash_ids = num_shared
    return req


#: Ids gathered before a first pass folds them into its counts (8 MB as int64)
_FOLD_IDS = 1 << 20


def shared_file_ids(replayed: Iterator[tuple[float, Row]]) -> set[int] | None:
    """The hash ids that occur more than once among the rows of a first pass over a streamed
    trace (`TraceWorkload._replayed`: the rows the replay keeps), or None when the first row has
    no ids (a trace without prefix hashes is not read twice) or an id does not fit int64 (then
    every id stays keyed, which is always exact). Memory: the distinct ids and their
    counts (capped at 2), folded with `np.unique` every `_FOLD_IDS` ids, then the shared ones
    as a set; the rows are not kept."""
    values = np.empty(0, np.int64)  # distinct ids so far (sorted), and how often each came (1 or 2)
    counts = np.empty(0, np.int64)
    chunk = array("q")

    def fold() -> None:
        nonlocal values, counts
        both, inverse = np.unique(np.concatenate((values, np.frombuffer(chunk, np.int64))), return_inverse=True)
        weights = np.concatenate((counts, np.ones(len(chunk), np.int64)))
        values, counts = both, np.minimum(np.bincount(inverse.reshape(-1), weights).astype(np.int64), 2)
        del chunk[:]

    try:
        for i, (_, row) in enumerate(replayed):
            if not i and not row[3]:
                return None
            if row[3]:
                chunk.extend(row[3])
                if len(chunk) >= _FOLD_IDS:
                    fold()
    except OverflowError:  # (an id past int64: left to be keyed whole)
        return None
    fold()
    return set(values[counts > 1].tolist())


def _shared_count(hashes: tuple[int, ...], shared: set[int]) -> int:
    """`shared_counts` of one row: its leading ids up to its last id in `shared`, at least 1
    when it has ids."""
    for i in range(len(hashes) - 1, 0, -1):
        if hashes[i] in shared:
            return i + 1
    return 1 if hashes else 0
