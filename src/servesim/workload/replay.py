"""Open-loop replay of a trace file: each row becomes one request at its (scaled) timestamp."""

from __future__ import annotations

from itertools import repeat
from typing import Iterator

import numpy as np

from servesim.errors import InputError
from servesim.workload.attributes import AttributeMix
from servesim.workload.config import WorkloadConfig
from servesim.workload.request import Request
from servesim.workload.trace_arrays import read_rows
from servesim.workload.traces.readers import TraceReader
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
        rows, ids = arrays
        start, end = self._trace.start_s, self._trace.end_s
        limit, duration = self._cfg.num_requests, self._cfg.duration_s
        rel = rows["arrival_s"] - rows["arrival_s"][:1]
        first = int(np.searchsorted(rel, start, side="left"))  # rows before start_s are skipped (times ascend)
        stop = len(rel) if end is None else int(np.searchsorted(rel, end, side="right"))
        arrival = (rel[first:stop] - start) / self._trace.speedup
        if duration is not None:
            arrival = arrival[:int(np.searchsorted(arrival, duration, side="right"))]
        n = len(arrival) if limit is None else min(len(arrival), limit)
        hashes, shared = (repeat(()), None) if ids is None else _hash_tuples(rows["num_hash_ids"], ids, first,
                                                                             first + n)
        rows = rows[first:first + n]
        reqs = map(Request, range(n), arrival[:n].tolist(), np.maximum(rows["prompt_len"], 1).tolist(),
                   np.maximum(rows["output_len"], 1).tolist(), hashes, repeat(DEFAULT_HASH_BLOCK_TOKENS))
        # (`_row_arrivals` streams a file, so it cannot know which ids later rows share: None there)
        return reqs if shared is None else map(_with_shared, reqs, shared)

    def _row_arrivals(self) -> Iterator[Request]:
        start, end = self._trace.start_s, self._trace.end_s
        speedup = self._trace.speedup
        limit = self._cfg.num_requests
        duration = self._cfg.duration_s
        attrs = self._attrs
        first: float | None = None
        next_id = 0
        for t, prompt, output, hashes, block, row_attrs in self._reader.rows():
            if t is None:
                raise InputError(f"{self._reader.display_name}: no arrival-time column (arrival_s, timestamp, TIMESTAMP)")
            if first is None:
                first = t
            rel = t - first
            if rel < start:
                continue
            if end is not None and rel > end:
                return
            arrival = (rel - start) / speedup
            if (duration is not None and arrival > duration) or (limit is not None and next_id >= limit):
                return
            req = Request(next_id, arrival, max(prompt, 1), max(output, 1), hashes, block)
            next_id += 1
            if attrs.active:
                for key, value in attrs.draw().items():
                    setattr(req, key, value)
            if row_attrs:
                for key, value in row_attrs.items():
                    setattr(req, key, value)
            yield req

    def on_request_done(self, req: Request, now_s: float) -> list[Request]:
        return []  # a replay is open loop


def _hash_tuples(counts: np.ndarray, ids: np.ndarray, first: int,
                 stop: int) -> tuple[Iterator[tuple[int, ...]], list[int]]:
    """The hash ids of rows [first, stop) as the tuples of ints the reader parses (`counts`:
    every row's number of ids, `ids`: all rows' ids in file order): the rows' ids become one
    tuple of ints, then each row's is a slice of it (a tuple too); with each row's
    `Request.num_shared_hash_ids` (`shared_counts`)."""
    ends = np.concatenate(([0], np.cumsum(counts, dtype=np.int64)))[first:stop + 1]
    replayed = ids[ends[0]:ends[-1]]
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
    _, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    # the end (index + 1) of the last shared id at or before each position
    last = np.maximum.accumulate(np.where(counts[inverse.reshape(-1)] > 1, np.arange(1, n + 1), 0))
    starts, stops = ends[:-1], ends[1:]
    upto = last[np.maximum(stops - 1, 0)] - starts  # (leading ids to the row's last shared one; <= 0: none)
    return np.where(stops > starts, np.maximum(upto, 1), 0).tolist()


def _with_shared(req: Request, num_shared: int) -> Request:
    req.num_shared_hash_ids = num_shared
    return req
