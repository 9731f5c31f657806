"""The recorder: raw facts of a run, reduced as they arrive.

It takes a log of engine steps: start, end, prefill tokens, output tokens, running and waiting
counts and KV blocks in use. Steps are logged in chunks (a single step, or a fast-forwarded
stretch whose per-step values the engine computed anyway), so recording a stretch costs O(1)
Python work. They gather in typed numpy columns (8 bytes per step for the end time; batch
sizes as runs of equal size and a few values per chunk; a `StepBuffer`, metrics/step_buffer.py),
never as lists of Python objects; every `CHUNK_STEPS` steps the buffer is expanded into
per-step columns (a `StepLog` chunk, metrics/step_log.py) and handed to the run's
`StepReducer` (metrics/step_reduce.py), which keeps only what summaries and time series read.
Unless the recorder was made with `keep_steps=False`, the chunks are also kept, and
`step_log()` returns the whole log (tests and tools that look at single steps).
"""

from __future__ import annotations

from itertools import islice
from typing import NamedTuple

import numpy as np

# The log's shape and the compact buffer live in their own modules; re-exported here, where
# callers have always imported them.
from servesim.metrics.step_buffer import CHUNK_FIELDS, Column, Rows, StepBuffer
from servesim.metrics.step_log import STEP_COLUMNS, StepLog, StepTimes, concat_step_logs, positions

__all__ = ["BatchRuns", "BlockGrowth", "CHUNK_FIELDS", "Column", "Recorder", "Rows", "STEP_COLUMNS", "StepBuffer",
           "StepLog", "concat_step_logs", "positions"]


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



class Recorder:
    """Collects the engine steps of one replica during a run, as compact typed columns,
    reduced every `CHUNK_STEPS` steps (so held memory is bounded by the chunk, not the run)."""

    #: steps buffered before they are reduced (about 20 bytes each while buffered)
    CHUNK_STEPS = 16384

    def __init__(self, keep_steps: bool = True) -> None:
        self.num_steps = 0
        self.reducer = None  # a StepReducer, set by `start` (None: the steps are only kept)
        self._helper = None  # a ReducerHelper reducing in another process (None: here)
        self._index = 0
        self._kept: list[StepBuffer] | None = [] if keep_steps else None  # full buffers, compact
        self._buf = StepBuffer()
        self._flush_at = self.CHUNK_STEPS

    def start(self, reducer, helper=None, index: int = 0) -> None:
        """Reduce the steps into `reducer` (a StepReducer) from now on; with a `ReducerHelper`
        (metrics/step_helper.py), in its process, as replica `index`'s."""
        self.reducer = reducer
        self._helper = helper
        self._index = index

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

    def log_steps(self, start_s: float, ends_s: list[float], prefill_tokens: int | list[int], output_tokens: list[int],
                  num_running: list[int], num_waiting: list[int], kv_used_blocks: list[int]) -> None:
        """Consecutive steps logged as `log_step` would log them one by one (a fast-forwarded
        stretch whose steps emit any number of tokens: speculative decoding; a prompt's chunks):
        the first starts at `start_s` and computes `prefill_tokens` prompt tokens (a list: one
        value per step), each later one starts when the one before ends and computes none;
        the lists hold one value per step. The buffer is handed on at the same steps as one by one."""
        n, i = len(ends_s), 0
        starts = [start_s, *ends_s[:-1]]
        prefill = prefill_tokens if type(prefill_tokens) is list else [prefill_tokens] + [0] * (n - 1)
        while i < n:
            m = min(n - i, self._flush_at - self.num_steps)  # (>= 1: a full buffer was handed on)
            j = i + m
            b = self._buf
            b.chunks.extend(zip(starts[i:j], prefill[i:j], num_waiting[i:j],
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
                         waiting_from: list[int] = (), prefill_at: list[tuple[int, int]] = (),
                         waiting_to: list[int] = (), silent_at: list[int] = (), silent_n: list[int] = ()) -> None:
        """Consecutive steps ending at `ends_s`: step j runs `batch[j]` requests; the first
        computes `first_prefill_tokens` prompt tokens, and each (step, tokens) of `prefill_at`
        (requests that joined a stretch, steps > 0) that many. A stretch (KV use given as a `BlockGrowth`) emits a token per
        running request per step; a single step logged by `log_step` says what it emitted.
        `num_waiting` requests wait in the first step, one more from each step listed in
        `waiting_from` on (arrivals that joined a blocked queue; indices into this chunk), one
        fewer from each step listed in `waiting_to` on (waiting requests admitted in the stretch).
        Each step listed in `silent_at` runs more requests than emit a token, by the matching
        count of `silent_n` (one each without it: a prompt's first chunk; a prompt-only step's
        stalled requests: `batch` counts the requests that emit).
        `ends_s` and `batch` may be lists or 1-D numpy arrays (copied); `batch` may also be
        given as `BatchRuns`."""
        if not isinstance(kv_used_blocks, BlockGrowth):
            if len(ends_s) != 1:
                raise ValueError("several steps logged at once need their KV use as a BlockGrowth")
            return self.log_step(start_s, float(ends_s[0]), first_prefill_tokens, int(batch[0]), int(batch[0]),
                                 num_waiting, int(kv_used_blocks))
        b = self._buf
        local = self._stretch(b, start_s, ends_s, batch, num_waiting, kv_used_blocks, first_prefill_tokens)
        if waiting_from:
            b.waiting_from.extend([local + step for step in waiting_from])
        if waiting_to:
            b.waiting_to.extend([local + step for step in waiting_to])
        if silent_at:
            b.silent_at.extend([local + step for step in silent_at])
            b.silent_n.extend(silent_n or [1] * len(silent_at))
        if prefill_at:  # (a prompt's chunk steps: one entry each, listed in C)
            b.prefill_at.extend([local + step for step, _ in prefill_at])
            b.prefill_more.extend([tokens for _, tokens in prefill_at])
        b.num_steps += len(ends_s)
        self.num_steps += len(ends_s)
        if self.num_steps >= self._flush_at:
            self._flush()

    def log_chunk_steps(self, start_s: float, ends_s: list[float], batch: BatchRuns, num_waiting: int,
                        kv_used_blocks: BlockGrowth, prefill_tokens: list[int], waiting_from: list[int],
                        silent: int) -> None:
        """`log_decode_steps` for a chunk stretch (replica/chunk_stretch.py): every step runs
        one prompt's chunk, `prefill_tokens[j]` tokens in step j, and `silent` requests more
        than emit a token (the prompt); the stretch's steps written to the buffer as one span (its
        prompt tokens after the first listed in C), rather than as (step, value) pairs."""
        b = self._buf
        k = len(ends_s)
        local = self._stretch(b, start_s, ends_s, batch, num_waiting, kv_used_blocks, prefill_tokens[0])
        if waiting_from:
            b.waiting_from.extend([local + step for step in waiting_from])
        b.span_at.append(local)
        b.span_len.append(k)
        b.span_silent.append(silent)
        if k > 1:
            b.span_prefill.extend(islice(prefill_tokens, 1, k))
        b.num_steps += k
        self.num_steps += k
        if self.num_steps >= self._flush_at:
            self._flush()

    @staticmethod
    def _stretch(b: StepBuffer, start_s: float, ends_s, batch, num_waiting: int, growth: BlockGrowth,
                 first_prefill_tokens: int) -> int:
        """A stretch's row, end times, batch runs, growth and frees in buffer `b`; returns the
        buffer index of its first step."""
        used0, first_new, runs, b.block_size, frees = growth
        b.chunks.append((start_s, first_prefill_tokens, num_waiting, len(ends_s), 0, used0, len(first_new)))
        b.ends.extend(ends_s)
        if type(batch) is not BatchRuns:
            batch = BatchRuns.of(batch)
        b.run_size.extend(batch.sizes)
        b.run_len.extend(batch.lens)
        b.growth_first_new.extend(first_new)
        b.growth_runs.extend(runs)
        local = b.num_steps
        if frees:
            for step, blocks in frees:
                b.free_at.append(local + step)
                b.free_blocks.append(blocks)
        return local

    def log_lone(self, start_s: float, ends_s, first_prefill_tokens: int, num_waiting: int, used0: int,
                 first_new: int, block_size: int, waiting_from: list[int]) -> None:
        """`log_decode_steps` for a stretch of one request, the commonest at many replicas (an
        arrival at an idle replica): its batch is `BatchRuns([1], [k])`, its KV use
        `BlockGrowth(used0, [first_new], [k], block_size, [])` (k: the steps, `len(ends_s)`),
        written to the buffer without building them; `waiting_from` as there, unfiltered."""
        b = self._buf
        k = len(ends_s)
        b.block_size = block_size
        b.chunks.append((start_s, first_prefill_tokens, num_waiting, k, 0, used0, 1))
        b.ends.extend(ends_s)
        b.run_size.append(1)
        b.run_len.append(k)
        b.growth_first_new.append(first_new)
        b.growth_runs.append(k)
        if waiting_from:
            local = b.num_steps
            b.waiting_from.extend([local + j for j in waiting_from if j < k])
        b.num_steps += k
        self.num_steps += k
        if self.num_steps >= self._flush_at:
            self._flush()

    def _flush(self) -> None:
        """Hand the buffered steps on (expanded) and start an empty buffer."""
        if self._buf.num_steps:
            ends = None
            if self._helper is not None:
                if self._helper.add(self._index, self._buf):  # (its bytes are in the pipe when this returns)
                    ends = self._buf.ends
            elif self.reducer is not None:
                self.reducer.add(self._buf.log(0))
            if self._kept is not None:
                self._buf.pack()
                self._kept.append(self._buf)
                ends = None
            self._buf = StepBuffer(None if ends is None else ends.clear())
        self._flush_at = self.num_steps + self.CHUNK_STEPS

    def finish(self) -> None:
        """End of run: reduce the steps still buffered. With a helper process that was never
        started (fewer steps than it forks at), here: forking at the end would only move this
        buffer's reduction to another process and add the fork's own cost."""
        if self._helper is not None and not self._helper.num_buffers:
            self._helper = None
        self._flush()

    def step_times(self) -> StepTimes:
        """The steps' times and prompt tokens (only when the recorder keeps its steps)."""
        if self._kept is None:
            raise ValueError("this recorder reduced its steps as they came (keep_steps=False)")
        self._flush()
        parts = [b.times() for b in self._kept]
        if len(parts) == 1:
            return parts[0]
        return StepTimes(*(np.concatenate([getattr(p, c) for p in parts]) if parts else np.empty(0, dtype=t)
                           for c, t in (("start_s", np.float64), ("end_s", np.float64), ("prefill_tokens", np.int32))))

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
