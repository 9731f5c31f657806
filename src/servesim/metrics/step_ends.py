"""End times of every step of a run, in memory or in files, read in chunks or by index.

Token runs index the replicas' step logs one after another; this is that concatenated column
without concatenating it: a list of segments, each an array (a kept step log) or a file of
float64 values (a log reduced as it came, see step_reduce.py). Reading by index maps a file
only for that read, so memory held stays with what was read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
