"""End times of every step of a run, in memory or in files, read in chunks or by index.

Token runs index the replicas' step logs one after another; this is that concatenated column
without concatenating it: a list of segments, each an array (a kept step log) or a file of
float64 values (a log reduced as it came, see step_reduce.py). Reading by index maps a file
only for that read, so memory held stays with what was read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from servesim.metrics.step_log import positions

#: values read at a time when scanning
CHUNK = 1 << 18


class StepEnds:
    """The concatenated step-end column over `segments` (arrays, or (path, length) files)."""

    def __init__(self, segments: list) -> None:
        self.segments = segments
        self._lens = [len(s) if isinstance(s, np.ndarray) else s[1] for s in segments]
        self.offsets = np.cumsum([0] + self._lens)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def chunks(self):
        """The column in order, a chunk at a time."""
        for seg, n in zip(self.segments, self._lens):
            if isinstance(seg, np.ndarray):
                for i in range(0, n, CHUNK):
                    yield seg[i:i + CHUNK]
                continue
            if not n:
                continue  # (a replica without steps wrote no file)
            with open(seg[0], "rb") as f:
                for i in range(0, n, CHUNK):
                    yield np.fromfile(f, np.float64, min(CHUNK, n - i))

    def chunk_firsts(self) -> np.ndarray:
        """The global index of the first step of each chunk `chunks()` yields."""
        firsts = [np.arange(0, n, CHUNK, dtype=np.int64) + off for off, n in zip(self.offsets[:-1].tolist(), self._lens)]
        return np.concatenate(firsts) if firsts else np.empty(0, np.int64)

    def __getitem__(self, index) -> np.ndarray:
        """Values at the (global) step indices `index` (an integer array)."""
        index = np.asarray(index, dtype=np.int64)
        if len(self.segments) == 1:  # (one replica: its log, without finding each index's segment)
            return self._open(0)[index]
        out = np.empty(index.shape)
        seg = np.searchsorted(self.offsets, index, side="right") - 1
        for s in np.flatnonzero(np.bincount(seg)).tolist():  # (the segments used, in order)
            sel = seg == s
            out[sel] = self._open(s)[index[sel] - self.offsets[s]]
        return out

    def _open(self, s: int) -> np.ndarray:
        seg = self.segments[s]
        if isinstance(seg, np.ndarray):
            return seg
        if seg[1] <= CHUNK:  # (read whole: a map of a file costs more than reading a chunk's bytes)
            return np.fromfile(seg[0], np.float64, seg[1])
        return np.memmap(Path(seg[0]), dtype=np.float64, mode="r", shape=(seg[1],))

    def max(self) -> float:
        """The latest step end (each segment is in time order: its last value, read alone)."""
        last = [float(seg[-1] if isinstance(seg, np.ndarray)
                      else np.fromfile(seg[0], np.float64, 1, offset=8 * n - 8)[0])
                for seg, n in zip(self.segments, self._lens) if n]
        return max(last) if last else float("nan")


#: ranges read as slices rather than by index once they hold this many values on average
SLICE_RANGES = 32


def read_ranges(column, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """`column[positions(starts, lens)]` (a `StepEnds` or an array): the values of the index
    ranges [start, start + len), one range after another. From the logs of several replicas,
    long ranges (a request's token runs are hundreds of steps at overload) are copied as
    slices, one per range, rather than gathered through an index per value, which finds each
    value's log and masks the index once per log (andes sessions 8's summary 59 -> 33 ms).
    From one log the gather is a single take, and it stays (as fast, and the QoE pass after it
    measured 3-4 ms faster at one replica)."""
    lens = np.asarray(lens, dtype=np.int64)
    total = int(lens.sum())
    if isinstance(column, np.ndarray) or len(column.segments) == 1 or total <= SLICE_RANGES * len(lens):
        return column[positions(starts, lens)]
    firsts = column.offsets.tolist()
    seg_of = (np.searchsorted(column.offsets, starts, side="right") - 1).tolist()
    opened: dict[int, np.ndarray] = {}  # (each segment read or mapped once)
    out = np.empty(total)
    at = 0
    for s, a, n in zip(seg_of, starts.tolist(), lens.tolist()):
        seg = opened.get(s)
        if seg is None:
            seg = opened[s] = column._open(s)
        a -= firsts[s]
        out[at:at + n] = seg[a:a + n]
        at += n
    return out
