"""Compact storage of logged steps: growing typed columns and the `StepBuffer` built on them.

The recorder (recorder.py) decides what is logged and when it is handed on; this module owns
how logged steps are held (a few numbers per chunk of steps or run of equal batch sizes, 8
bytes per step) and how a buffer is expanded, vectorised, into a per-step `StepLog`. `Column`
and `Rows` are general growing columns (the request table uses `Column` too).
"""

from __future__ import annotations

from itertools import chain

import numpy as np

from servesim.metrics.step_log import StepLog, StepTimes, positions

# the fields of a chunk's row in `StepBuffer.chunks` (a, b: see there)
CHUNK_FIELDS = ("start_s", "prefill0", "num_waiting", "len", "single", "a", "b")


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
    values in one flat list (a row costs one C `extend`, and converting a flat list is about
    ten times cheaper than a list of tuples), packed every `FLUSH` rows into a float64 table
    (exact for times and for integers below 2^53)."""

    FLUSH = 4096

    def __init__(self, width: int) -> None:
        self.width = width
        self._parts: list[np.ndarray] = []
        self._tail: list = []  # the rows' values, row after row

    def append(self, row: tuple) -> None:
        self._tail += row
        if len(self._tail) >= self.FLUSH * self.width:
            self._flush()

    def extend(self, rows) -> None:
        tail = self._tail
        tail += chain.from_iterable(rows)  # (one C pass over the rows' values)
        if len(tail) >= self.FLUSH * self.width:
            self._flush()

    def _flush(self) -> None:
        if self._tail:
            self._parts.append(np.array(self._tail, dtype=np.float64).reshape(-1, self.width))
            self._tail = []

    def table(self) -> np.ndarray:
        """All rows, shape (rows, width)."""
        self._flush()
        if len(self._parts) > 1:
            self._parts = [np.concatenate(self._parts)]
        return self._parts[0] if self._parts else np.empty((0, self.width))


class Floats:
    """A growing float64 column in one array with room to spare (a step buffer's end times:
    a stretch's steps are one slice assignment, and the buffer is handed on as a view, with no
    list of parts to join). `clear` keeps the array for the next buffer."""

    __slots__ = ("_a", "n")

    def __init__(self, capacity: int = 1024) -> None:
        self._a = np.empty(capacity)
        self.n = 0

    def _grow(self, need: int) -> None:
        a = np.empty(max(need, 2 * len(self._a)))
        a[:self.n] = self._a[:self.n]
        self._a = a

    def append(self, value: float) -> None:
        n = self.n
        if n == len(self._a):
            self._grow(n + 1)
        self._a[n] = value
        self.n = n + 1

    def extend(self, values) -> None:
        """Append a 1-D sequence (list or numpy array), copied."""
        n, m = self.n, len(values)
        if n + m > len(self._a):
            self._grow(n + m)
        self._a[n:n + m] = values
        self.n = n + m

    def array(self) -> np.ndarray:
        """The values (a view: valid until the column changes or is cleared)."""
        return self._a[:self.n]

    def trimmed(self) -> np.ndarray:
        """The values in an array of their own size (a buffer kept for the whole run)."""
        self._a = self._a[:self.n].copy()
        return self._a

    def clear(self) -> "Floats":
        self.n = 0
        return self


class Ints(list):
    """A buffer's per-run values (batch-size runs, block growth of a stretch's requests): a
    plain list while the buffer fills (a stretch adds one or two values to each, and a list's
    C `extend` costs a fifth of `Column.extend`), an array once the buffer is packed."""

    __slots__ = ("dtype",)

    def __init__(self, dtype) -> None:
        super().__init__()
        self.dtype = dtype

    def array(self) -> np.ndarray:
        # (`np.array(self, dtype=...)`'s values, without its pass over them for their shape and types)
        return np.fromiter(self, self.dtype, len(self))


class Packed:
    """A packed `Ints`: its values as an array."""

    __slots__ = ("values",)

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def array(self) -> np.ndarray:
        return self.values


# the per-run and per-event columns of a buffer (lists while it fills, see `Ints`)
_LISTS = ("waiting_from", "run_size", "run_len", "growth_first_new", "growth_runs", "free_at", "free_blocks",
          "prefill_at", "prefill_more", "waiting_to", "silent_at", "silent_n", "span_at", "span_len", "span_silent",
          "span_prefill")
#: dtypes of the arrays `StepBuffer.wire` gives: the chunks' table (flat), the end times, `_LISTS`
WIRE = (np.float64, np.float64, np.int64, np.int32, np.int64, np.int64, np.int64, np.int64, np.int64,
        np.int64, np.int32, np.int64, np.int64, np.int64, np.int64, np.int64, np.int64, np.int32)


class StepBuffer:
    """Steps as logged, in compact typed columns (a few per chunk of steps or run of
    equal batch sizes, 8 bytes per step);
    `log()` expands them into per-step columns. Step indices are local to the buffer."""

    def __init__(self, ends: Floats | None = None) -> None:
        self.num_steps = 0
        # one row per chunk of consecutive steps: the start of its first step (later ones start
        # when the previous ends), that step's prompt tokens (later ones have none) and waiting
        # count, its number of steps, whether it is a single step (KV use as logged) or a
        # stretch (KV use as growth), then for a single step the tokens it emitted (a stretch
        # emits `batch`) and its blocks in use, for a stretch its blocks in use in its first
        # step and its number of growing requests
        self.chunks = Rows(len(CHUNK_FIELDS))
        self.waiting_from = Ints(np.int64)  # steps from which one more waits, until the chunk ends
        # one entry per step (`ends`: an emptied column of an earlier buffer may be reused)
        self.ends = Floats() if ends is None else ends
        # requests in each step, as runs of equal batch sizes (expanded in `log`)
        self.run_size = Ints(np.int32)
        self.run_len = Ints(np.int64)
        # block growth of the stretches, flattened as they are logged (expanded in `log`)
        self.block_size = 0
        self.growth_first_new = Ints(np.int64)
        self.growth_runs = Ints(np.int64)
        self.free_at = Ints(np.int64)  # step before which blocks were freed
        self.free_blocks = Ints(np.int64)
        # prompt tokens of steps inside a stretch (requests that joined it), beyond each chunk's first
        self.prefill_at = Ints(np.int64)
        self.prefill_more = Ints(np.int32)
        # steps from which one fewer waits, until the chunk ends (admitted inside a stretch)
        self.waiting_to = Ints(np.int64)
        # steps of a stretch with one more running request than emit a token (a prompt's first
        # chunk, admitted inside an admission stretch, whose rest runs in the next step)
        self.silent_at = Ints(np.int64)
        self.silent_n = Ints(np.int64)  # (how many more run than emit at each of those steps)
        # a chunk stretch's steps as one entry (`Recorder.log_chunk_steps`: a Sarathi prompt's
        # chunks, about 26 steps each on Mooncake): its first step, its number of steps, how many
        # more requests run than emit in each, and its steps' prompt tokens after its first
        # (`span_prefill`, one value a step): ranges where the lists above take an entry a step
        self.span_at = Ints(np.int64)
        self.span_len = Ints(np.int64)
        self.span_silent = Ints(np.int64)
        self.span_prefill = Ints(np.int32)

    def pack(self) -> None:
        """Hold the per-run lists as arrays (a buffer kept for the whole run: 4-8 bytes a
        value instead of a list slot and an int object), the end times in an array of their size."""
        self.ends.trimmed()
        for name in _LISTS:
            col = getattr(self, name)
            if isinstance(col, Ints):
                setattr(self, name, Packed(col.array()))

    def wire(self) -> list[np.ndarray]:
        """The buffer's columns as contiguous arrays, in `WIRE` order (what the helper process
        is sent: raw bytes, no pickling; the end times are a view of this buffer's column)."""
        return [self.chunks.table().ravel(), self.ends.array(), *(getattr(self, name).array() for name in _LISTS)]

    @classmethod
    def from_wire(cls, num_steps: int, block_size: int, arrays: list[np.ndarray]) -> "StepBuffer":
        """The buffer `wire` described (its columns, read back in `WIRE` order)."""
        buf = cls()
        buf.num_steps, buf.block_size = num_steps, block_size
        table, ends, *lists = arrays
        buf.chunks._parts = [table.reshape(-1, len(CHUNK_FIELDS))]
        buf.ends._a, buf.ends.n = ends, len(ends)
        for name, values in zip(_LISTS, lists):
            setattr(buf, name, Packed(values))
        return buf

    def log(self, num_gpu_blocks: int) -> StepLog:
        chunks = {name: col for name, col in zip(CHUNK_FIELDS, self.chunks.table().T)}
        lens = chunks["len"].astype(np.int64)
        single = chunks["single"] != 0
        first = np.cumsum(lens) - lens  # index of each chunk's first step
        start_s, end_s, prefill = self._times(chunks, first)
        running = np.repeat(self.run_size.array(), self.run_len.array())
        emitted = running.copy()
        emitted[first[single]] = chunks["a"][single]
        silent = self.silent_at.array()
        if len(silent):
            np.add.at(running, silent, self.silent_n.array())  # (a step may be listed twice: summed)
        spans = self.span_at.array()
        if len(spans):  # (a span's steps are its own: none is listed above)
            span_len, extra = self.span_len.array(), self.span_silent.array()
            some = extra != 0
            running[positions(spans[some], span_len[some])] += np.repeat(extra[some], span_len[some])
        return StepLog(start_s=start_s, end_s=end_s, prefill_tokens=prefill, output_tokens=emitted,
                       num_running=running, num_waiting=self._waiting(first, lens, chunks["num_waiting"]),
                       kv_used_blocks=self._block_usage(first, lens, single, chunks), num_gpu_blocks=num_gpu_blocks)

    def times(self) -> StepTimes:
        """The steps' times and prompt tokens alone (`StepTimes`), as `log` gives them."""
        chunks = {name: col for name, col in zip(CHUNK_FIELDS, self.chunks.table().T)}
        lens = chunks["len"].astype(np.int64)
        return StepTimes(*self._times(chunks, np.cumsum(lens) - lens))

    def _times(self, chunks: dict, first: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(start, end, prompt tokens) of every step; `first`: each chunk's first step."""
        end_s = self.ends.array()
        start_s = np.empty(self.num_steps)
        start_s[1:] = end_s[:-1]
        start_s[first] = chunks["start_s"]
        prefill = np.zeros(self.num_steps, dtype=np.int32)
        prefill[first] = chunks["prefill0"]
        at = self.prefill_at.array()
        if len(at):
            prefill[at] += self.prefill_more.array()  # (steps distinct, never a chunk's first)
        spans = self.span_at.array()
        if len(spans):  # (a span's steps after its first: in no list above)
            prefill[positions(spans + 1, self.span_len.array() - 1)] = self.span_prefill.array()
        return start_s, end_s, prefill

    def _waiting(self, first: np.ndarray, lens: np.ndarray, first_waiting: np.ndarray) -> np.ndarray:
        """Waiting count at every step: each chunk's first value, plus the arrivals it kept
        from their step to the chunk's end, less the requests it admitted (`waiting_to`)."""
        waiting = np.repeat(first_waiting.astype(np.int64), lens)
        at, gone = self.waiting_from.array(), self.waiting_to.array()
        if len(at) or len(gone):
            delta = np.bincount(at, minlength=self.num_steps)
            if len(gone):
                delta = delta - np.bincount(gone, minlength=self.num_steps)
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
