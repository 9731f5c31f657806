"""Shipped traces' rows as numpy arrays: arrival time and the two lengths, and the prefix hash
ids for the traces that carry them (the Mooncake trace).

Replaying a shipped trace parsed its gzipped CSV row by row with the reader's checks: about
3.3 us a request for the Azure conversation trace (a timestamp, two counts, four generator
layers), a few per cent of a replayed request's whole cost. The same rows as an array built
from that parse (`<name>.rows.npy`: float64 seconds as the reader computes them, int32
lengths) load in under a millisecond and become requests a column at a time. The arrays are
derived data, built from the shipped files by

    python -m servesim.workload.trace_arrays

and `tests/workload/test_trace_arrays.py` checks that each equals its source's parse. A user's
file, or a shipped trace with attribute columns or another hash block size, is read row by row.

Prefix hash ids (Mooncake: 288,500 ids over 12,031 rows, one per 512-token block) were the
larger part of reading a JSONL row (a JSON list, then `int()` of every id), about 8 % of a vllm
Mooncake cell. With hashes the rows array has a fourth field, `num_hash_ids`, and
`<name>.hash_runs.npy` holds all rows' ids in file order as runs of consecutive ids (first id,
length: int32 pairs): 88 % of the trace's ids continue the one before, so the runs are 33,400
pairs (267 KB) rather than 288,500 ids (`hash_ids`: the flat ids back, exactly).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from servesim.workload.traces.readers import TraceReader
from servesim.workload.traces.registry import SHIPPED_TRACES, ShippedTrace
from servesim.workload.traces.schema import DEFAULT_HASH_BLOCK_TOKENS

ARRAY_SUFFIX = ".rows.npy"
ROW_DTYPE = np.dtype([("arrival_s", np.float64), ("prompt_len", np.int32), ("output_len", np.int32)])
HASHED_ROW_DTYPE = np.dtype(ROW_DTYPE.descr + [("num_hash_ids", np.int32)])
HASH_SUFFIX = ".hash_runs.npy"
_INT32_MAX = 2**31 - 1


def array_path(shipped: ShippedTrace) -> Path:
    """Where the rows of a shipped trace live as an array (beside it, `.csv.gz` replaced)."""
    name = shipped.path.name.removesuffix(".gz").removesuffix(".csv").removesuffix(".jsonl")
    return shipped.path.with_name(name + ARRAY_SUFFIX)


def hash_path(shipped: ShippedTrace) -> Path:
    """Where the hash ids of a shipped trace's rows live as runs (beside its rows array)."""
    rows = array_path(shipped)
    return rows.with_name(rows.name.removesuffix(ARRAY_SUFFIX) + HASH_SUFFIX)


def parse_rows(shipped: ShippedTrace) -> tuple[np.ndarray, np.ndarray | None] | None:
    """(rows, hash ids) of the trace parsed with the reader's checks: rows as ROW_DTYPE records
    and no ids when no row has hash ids, else HASHED_ROW_DTYPE and all rows' ids in file order
    (int64). None when a row carries what the arrays do not hold (a block size other than the
    default, attributes, a count or id past int32)."""
    out, ids = [], []
    for t, prompt, output, hashes, block, attrs in TraceReader(shipped.path, display_name=shipped.name).rows():
        if t is None or block != DEFAULT_HASH_BLOCK_TOKENS or attrs or max(prompt, output) > _INT32_MAX:
            return None
        if hashes and not (type(hashes) is tuple and 0 <= min(hashes) and max(hashes) <= _INT32_MAX):
            return None
        out.append((t, prompt, output, len(hashes)))
        ids += hashes
    if not ids:
        return np.array([r[:3] for r in out], dtype=ROW_DTYPE), None
    return np.array(out, dtype=HASHED_ROW_DTYPE), np.array(ids, dtype=np.int64)


def id_runs(ids: np.ndarray) -> np.ndarray:
    """Ids as runs of consecutive ids: an (n, 2) int32 array of (first id, length)."""
    cuts = np.flatnonzero(np.diff(ids) != 1) + 1
    starts = np.concatenate(([0], cuts))
    return np.stack([ids[starts], np.diff(np.concatenate((starts, [len(ids)])))], axis=1).astype(np.int32)


def hash_ids(runs: np.ndarray, lo: int = 0, hi: int | None = None) -> np.ndarray:
    """Ids [lo, hi) (all by default) of those `id_runs` made its runs of (int64): run i's first
    id plus 0, 1, ... length - 1. Only the runs the slice crosses are expanded (a replay of a
    few thousand rows reads a fraction of the trace's 288,500 ids: expanding them all was 2.5 ms
    a run)."""
    first, length = runs[:, 0].astype(np.int64), runs[:, 1].astype(np.int64)
    end = np.cumsum(length)
    if hi is None:
        hi = int(end[-1]) if len(end) else 0
    a, b = int(np.searchsorted(end, lo, side="right")), int(np.searchsorted(end, hi, side="left")) + 1
    first, length, end = first[a:b], length[a:b], end[a:b]
    if not len(end) or hi <= lo:
        return np.zeros(0, dtype=np.int64)
    begin = end - length  # where each run starts among the ids
    base = int(begin[0])
    ids = np.arange(base, int(end[-1]), dtype=np.int64) + np.repeat(first - begin, length)
    return ids[lo - base:hi - base]


def read_rows(shipped: ShippedTrace | None) -> tuple[np.ndarray, np.ndarray | None] | None:
    """(rows, hash id runs or None) of a shipped trace from its arrays, None if it has none
    (read it row by row). The ids of rows are `hash_ids` of the runs."""
    if shipped is None or not shipped.has_arrival or not array_path(shipped).is_file():
        return None
    rows = np.load(array_path(shipped), allow_pickle=False)
    if rows.dtype != HASHED_ROW_DTYPE:
        return rows, None
    return rows, np.load(hash_path(shipped), allow_pickle=False)


def build_arrays() -> list[Path]:
    """Write the arrays of every shipped trace whose rows they can hold (`parse_rows`)."""
    written = []
    for shipped in {t.relpath: t for t in SHIPPED_TRACES.values() if t.has_arrival}.values():
        parsed = parse_rows(shipped)
        if parsed is not None:
            rows, ids = parsed
            np.save(array_path(shipped), rows, allow_pickle=False)
            written.append(array_path(shipped))
            if ids is not None:
                np.save(hash_path(shipped), id_runs(ids), allow_pickle=False)
                written.append(hash_path(shipped))
    return written


if __name__ == "__main__":
    for p in build_arrays():
        print(f"wrote {p}")
