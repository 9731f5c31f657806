"""The recorder: raw facts of a run, reduced as they arrive.

It takes a log of engine steps: start, end, prefill tokens, output tokens, running and waiting
counts and KV blocks in use. Steps are logged in chunks (a single step, or a fast-forwarded
stretch whose per-step values the engine computed anyway), so recording a stretch costs O(1)
Python work. They gather in typed numpy columns (8 bytes per step for the end time; batch
sizes as runs of equal size and a few values per chunk), never as lists of Python objects; every `CHUNK_STEPS` steps the
buffer is expanded into per-step columns (a `StepLog` chunk) and handed to the run's
`StepReducer` (metrics/step_reduce.py), which keeps only what summaries and time series read.
Unless the recorder was made with `keep_steps=False`, the chunks are also kept, and
`step_log()` returns the whole log (tests and tools that look at single steps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

# the fields of a chunk's row in `StepBuffer.chunks` (a, b: see there)
CHUNK_FIELDS = ("start_s", "prefill0", "num_waiting", "len", "single", "a", "b")
STEP_COLUMNS = ("start_s", "end_s", "prefill_tokens", "output_tokens", "num_running", "num_waiting", "kv_used_blocks")


@dataclass(frozen=True)
class StepLog:
    """Per-step columns of one replica, all the same length (one entry per engine step).
    Times are float64; counts are int32 (4 bytes a step; arithmetic with a float promotes them
    to float64, so every derived value is what float64 counts would give)."""

    start_s: np.ndarray
    end_s: np.ndarray
    prefill_tokens: np.ndarray  # int32
    output_tokens: np.ndarray  # int32
    num_running: np.ndarray  # int32
    num_waiting: np.ndarray  # int32
    kv_used_blocks: np.ndarray  # int32
    num_gpu_blocks: int

    def __len__(self) -> int:
        return len(self.end_s)


class BlockGrowth(NamedTuple):
    """KV blocks in use over a fast-forwarded stretch, described instead of listed.

    `used0` blocks are in use in step 0. Request i gets a new block at steps first_new[i],
    first_new[i] + block_size, ... while below runs[i] (the steps it runs); `frees` lists
    (step, blocks) released before a step by requests that finished earlier in the stretch.
    """

    used0: int
    first_new: list[int]
    runs: list[int]
    block_size: int
    frees: list[tuple[int, int]]


class BatchRuns(NamedTuple):
    """Batch sizes of consecutive steps, run by run: `lens[i]` steps of `sizes[i]` requests
    (a stretch's batch changes only when a request leaves, so it is logged in a few runs
    instead of a value per step)."""

    sizes: list[int]
    lens: list[int]

    @classmethod
    def of(cls, batch) -> "BatchRuns":
        """The runs of a batch size per step (a list or 1-D array)."""
        if len(batch) < 2:
            return cls(list(batch), [1] * len(batch))
        a = np.asarray(batch)
        starts = np.concatenate(([0], np.flatnonzero(a[1:] != a[:-1]) + 1))
        return cls(a[starts], np.diff(starts, append=len(a)))


class Column:
    """A growing typed column: scalars gather in a short list, flushed to numpy every
    `FLUSH` values; long runs (a stretch's steps) are copied in as one array. Held memory is
    the dtype's size per value, not a Python object's (a float in a list costs 32 bytes)."""

    FLUSH = 4096

    def __init__(self, dtype) -> None:
        self.dtype = dtype
        self._parts: list[np.ndarray] = []
        self._tail: list = []

    def append(self, value) -> None:
        self._tail.append(value)
        if len(self._tail) >= self.FLUSH:
            self._flush()

    def extend(self, values) -> None:
        """Append a 1-D sequence (list or numpy array); copied, so the caller may reuse it."""
        if len(values) < 64:
            self._tail.extend(values)
            if len(self._tail) >= self.FLUSH:
                self._flush()
        else:
            self._flush()
            self._parts.append(np.array(values, dtype=self.dtype))

    def _flush(self) -> None:
        if self._tail:
            self._parts.append(np.array(self._tail, dtype=self.dtype))
            self._tail = []

    def array(self) -> np.ndarray:
        self._flush()
        if len(self._parts) > 1:
            self._parts = [np.concatenate(self._parts)]
        return self._parts[0] if self._parts else np.empty(0, dtype=self.dtype)


class Rows:
    """A growing table of a few numbers per row (one row per chunk of steps): rows gather as
    tuples, packed every `FLUSH` rows into a float64 table (exact for times and for integers
    below 2^53), so a chunk costs one append whatever its number of fields."""

    FLUSH = 4096

    def __init__(self, width: int) -> None:
        self.width = width
        self._parts: list[np.ndarray] = []
        self._tail: list[tuple] = []

    def append(self, row: tuple) -> None:
        self._tail.append(row)
        if len(self._tail) >= self.FLUSH:
            self._flush()

    def extend(self, rows) -> None:
        self._tail.extend(rows)
        if len(self._tail) >= self.FLUSH:
            self._flush()

    def _flush(self) -> None:
        if self._tail:
            self._parts.append(np.array(self._tail, dtype=np.float64))
            self._tail = []

    def table(self) -> np.ndarray:
        """All rows, shape (rows, width)."""
        self._flush()
        if len(self._parts) > 1:
            self._parts = [np.concatenate(self._parts)]
        return self._parts[0] if self._parts else np.empty((0, self.width))


class StepBuffer:
    """Steps as logged, in compact typed columns (a few per chunk of steps or run of
    equal batch sizes, 8 bytes per step);
    `log()` expands them into per-step columns. Step indices are local to the buffer."""

    def __init__(self) -> None:
        self.num_steps = 0
        # one row per chunk of consecutive steps: the start of its first step (later ones start
        # when the previous ends), that step's prompt tokens (later ones have none) and waiting
        # count, its number of steps, whether it is a single step (KV use as logged) or a
        # stretch (KV use as growth), then for a single step the tokens it emitted (a stretch
        # emits `batch`) and its blocks in use, for a stretch its blocks in use in its first
        # step and its number of growing requests
        self.chunks = Rows(len(CHUNK_FIELDS))
        self.waiting_from = Column(np.int64)  # steps from which one more waits, until the chunk ends
        # one entry per step
        self.ends = Column(np.float64)
        # requests in each step, as runs of equal batch sizes (expanded in `log`)
        self.run_size = Column(np.int32)
        self.run_len = Column(np.int64)
        # block growth of the stretches, flattened as they are logged (expanded in `log`)
        self.block_size = 0
        self.growth_first_new = Column(np.int64)
        self.growth_runs = Column(np.int64)
        self.free_at = Column(np.int64)  # step before which blocks were freed
        self.free_blocks = Column(np.int64)

    def log(self, num_gpu_blocks: int) -> StepLog:
        n = self.num_steps
        chunks = {name: col for name, col in zip(CHUNK_FIELDS, self.chunks.table().T)}
        lens = chunks["len"].astype(np.int64)
        single = chunks["single"] != 0
        first = np.cumsum(lens) - lens  # index of each chunk's first step
        end_s = self.ends.array()
        start_s = np.empty(n)
        start_s[1:] = end_s[:-1]
        start_s[first] = chunks["start_s"]
        prefill = np.zeros(n, dtype=np.int32)
        prefill[first] = chunks["prefill0"]
        running = np.repeat(self.run_size.array(), self.run_len.array())
        emitted = running.copy()
        emitted[first[single]] = chunks["a"][single]
        return StepLog(start_s=start_s, end_s=end_s, prefill_tokens=prefill, output_tokens=emitted,
                       num_running=running, num_waiting=self._waiting(first, lens, chunks["num_waiting"]),
                       kv_used_blocks=self._block_usage(first, lens, single, chunks), num_gpu_blocks=num_gpu_blocks)

    def _waiting(self, first: np.ndarray, lens: np.ndarray, first_waiting: np.ndarray) -> np.ndarray:
        """Waiting count at every step: each chunk's first value, plus the arrivals it kept
        from their step to the chunk's end."""
        waiting = np.repeat(first_waiting.astype(np.int64), lens)
        at = self.waiting_from.array()
        if len(at):
            delta = np.bincount(at, minlength=self.num_steps)
            grown = np.cumsum(delta)  # arrivals kept up to each step, over all chunks
            waiting += grown - np.repeat(grown[first] - delta[first], lens)  # less those of earlier chunks
        return waiting.astype(np.int32)

    def _block_usage(self, first: np.ndarray, lens: np.ndarray, single: np.ndarray, chunks: dict) -> np.ndarray:
        """Blocks in use at every step: single steps as logged, stretches expanded from their
        growth, vectorised over all of them at once (integers, with one step-sized temporary)."""
        n = self.num_steps
        stretch = ~single
        kv_single = chunks["b"][single].astype(np.int64)
        if not stretch.any():
            kv = np.empty(n, dtype=np.int32)
            kv[first] = kv_single
            return kv
        starts, bs = first[stretch], self.block_size
        sizes = chunks["b"][stretch].astype(np.int64)
        f = self.growth_first_new.array()
        m = self.growth_runs.array()
        c = np.where(f < m, (m - f - 1) // bs + 1, 0)  # blocks each request gets in its stretch
        first_block = np.repeat(np.repeat(starts, sizes) + f, c)
        nth = np.arange(len(first_block)) - np.repeat(np.cumsum(c) - c, c)
        delta = np.bincount(first_block + bs * nth, minlength=n)  # blocks added at each step
        del first_block, nth
        at = self.free_at.array()
        if len(at):
            delta -= np.bincount(at, weights=self.free_blocks.array(), minlength=n).astype(np.int64)
        kv = np.cumsum(delta)  # changes up to and including each step
        offset = np.zeros(len(lens), dtype=np.int64)  # per chunk: its level before its first change
        offset[stretch] = chunks["a"][stretch].astype(np.int64) - (kv[starts] - delta[starts])
        del delta
        kv += np.repeat(offset, lens)
        kv[first[single]] = kv_single
        return kv.astype(np.int32)


class Recorder:
    """Collects the engine steps of one replica during a run, as compact typed columns,
    reduced every `CHUNK_STEPS` steps (so held memory is bounded by the chunk, not the run)."""

    #: steps buffered before they are reduced (about 20 bytes each while buffered)
    CHUNK_STEPS = 16384

    def __init__(self, keep_steps: bool = True) -> None:
        self.num_steps = 0
        self.reducer = None  # a StepReducer, set by `start` (None: the steps are only kept)
        self._kept: list[StepBuffer] | None = [] if keep_steps else None  # full buffers, compact
        self._buf = StepBuffer()
        self._flush_at = self.CHUNK_STEPS

    def start(self, reducer) -> None:
        """Reduce the steps into `reducer` (a StepReducer) from now on."""
        self.reducer = reducer

    def log_step(self, start_s: float, end_s: float, prefill_tokens: int, output_tokens: int,
                 num_running: int, num_waiting: int, kv_used_blocks: int) -> None:
        b = self._buf
        b.chunks.append((start_s, prefill_tokens, num_waiting, 1, 1, output_tokens, kv_used_blocks))
        b.ends.append(end_s)
        b.run_size.append(num_running)
        b.run_len.append(1)
        b.num_steps += 1
        self.num_steps += 1
        if self.num_steps >= self._flush_at:
            self._flush()

    def log_steps(self, start_s: float, ends_s: list[float], prefill_tokens: int, output_tokens: list[int],
                  num_running: list[int], num_waiting: list[int], kv_used_blocks: list[int]) -> None:
        """Consecutive steps logged as `log_step` would log them one by one (a fast-forwarded
        stretch whose steps emit any number of tokens: speculative decoding): the first
        starts at `start_s` and computes `prefill_tokens` prompt tokens, each later one starts
        when the one before ends and computes none; the lists hold one value per step. The
        buffer is handed on at the same steps as one by one."""
        n, i = len(ends_s), 0
        starts = [start_s, *ends_s[:-1]]
        while i < n:
            m = min(n - i, self._flush_at - self.num_steps)  # (>= 1: a full buffer was handed on)
            j = i + m
            b = self._buf
            b.chunks.extend(zip(starts[i:j], [prefill_tokens if i == 0 else 0] + [0] * (m - 1), num_waiting[i:j],
                                [1] * m, [1] * m, output_tokens[i:j], kv_used_blocks[i:j]))
            b.ends.extend(ends_s[i:j])
            b.run_size.extend(num_running[i:j])
            b.run_len.extend([1] * m)
            b.num_steps += m
            self.num_steps += m
            if self.num_steps >= self._flush_at:
                self._flush()
            i = j

    def log_decode_steps(self, start_s: float, ends_s, batch, num_waiting: int,
                         kv_used_blocks: int | BlockGrowth, first_prefill_tokens: int = 0,
                         waiting_from: list[int] = ()) -> None:
        """Consecutive steps ending at `ends_s`: step j runs `batch[j]` requests; only the first
        computes prompt tokens. A stretch (KV use given as a `BlockGrowth`) emits a token per
        running request per step; a single step logged by `log_step` says what it emitted.
        `num_waiting` requests wait in the first step, one more from each step listed in
        `waiting_from` on (arrivals that joined a blocked queue; indices into this chunk).
        `ends_s` and `batch` may be lists or 1-D numpy arrays (copied); `batch` may also be
        given as `BatchRuns`."""
        if not isinstance(kv_used_blocks, BlockGrowth):
            if len(ends_s) != 1:
                raise ValueError("several steps logged at once need their KV use as a BlockGrowth")
            return self.log_step(start_s, float(ends_s[0]), first_prefill_tokens, int(batch[0]), int(batch[0]),
                                 num_waiting, int(kv_used_blocks))
        b = self._buf
        used0, first_new, runs, b.block_size, frees = kv_used_blocks
        b.chunks.append((start_s, first_prefill_tokens, num_waiting, len(ends_s), 0, used0, len(first_new)))
        b.ends.extend(ends_s)
        if type(batch) is not BatchRuns:
            batch = BatchRuns.of(batch)
        b.run_size.extend(batch.sizes)
        b.run_len.extend(batch.lens)
        b.growth_first_new.extend(first_new)
        b.growth_runs.extend(runs)
        local = b.num_steps  # buffer index of the chunk's first step
        for step, blocks in frees:
            b.free_at.append(local + step)
            b.free_blocks.append(blocks)
        for step in waiting_from:
            b.waiting_from.append(local + step)
        b.num_steps += len(ends_s)
        self.num_steps += len(ends_s)
        if self.num_steps >= self._flush_at:
            self._flush()

    def _flush(self) -> None:
        """Hand the buffered steps on (expanded) and start an empty buffer."""
        if self._buf.num_steps:
            if self.reducer is not None:
                self.reducer.add(self._buf.log(0))
            if self._kept is not None:
                self._kept.append(self._buf)
            self._buf = StepBuffer()
        self._flush_at = self.num_steps + self.CHUNK_STEPS

    def finish(self) -> None:
        """End of run: reduce the steps still buffered."""
        self._flush()

    def step_log(self, num_gpu_blocks: int) -> StepLog:
        """The whole log (only when the recorder keeps its steps)."""
        if self._kept is None:
            raise ValueError("this recorder reduced its steps as they came (keep_steps=False)")
        self._flush()
        logs = [b.log(num_gpu_blocks) for b in self._kept]
        if len(logs) == 1:
            return logs[0]
        cols = {c: np.concatenate([getattr(g, c) for g in logs]) if logs
                else np.empty(0, dtype=np.float64 if c.endswith("_s") else np.int32) for c in STEP_COLUMNS}
        return StepLog(**cols, num_gpu_blocks=num_gpu_blocks)


def positions(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """All indices of ranges starting at `starts` with `lens` elements each."""
    lens = np.asarray(lens, dtype=np.int64)
    return np.repeat(starts, lens) + (np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens))


def concat_step_logs(logs: list[StepLog]) -> tuple[StepLog, list[int]]:
    """The replicas' logs one after another (each keeps its own time order), and the index of
    each log's first step. Step-to-step differences across a boundary belong to no request."""
    offsets = np.cumsum([0] + [len(g) for g in logs[:-1]]).tolist()
    cols = {c: np.concatenate([getattr(g, c) for g in logs]) for c in STEP_COLUMNS}
    return StepLog(**cols, num_gpu_blocks=sum(g.num_gpu_blocks for g in logs)), offsets
