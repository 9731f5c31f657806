"""Shipped traces' rows as numpy arrays: arrival time and the two lengths, for the traces whose
rows carry nothing else (the Azure traces).

Replaying a shipped trace parsed its gzipped CSV row by row with the reader's checks: about
3.3 us a request for the Azure conversation trace (a timestamp, two counts, four generator
layers), a few per cent of a replayed request's whole cost. The same rows as an array built
from that parse (`<name>.rows.npy`: float64 seconds as the reader computes them, int32
lengths) load in under a millisecond and become requests a column at a time. The arrays are
derived data, built from the shipped files by

    python -m servesim.workload.trace_arrays

and `tests/workload/test_trace_arrays.py` checks that each equals its source's parse. A user's
file, or a shipped trace with prefix hashes or attribute columns, is read row by row as before.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from servesim.workload.traces.readers import TraceReader
from servesim.workload.traces.registry import SHIPPED_TRACES, ShippedTrace
from servesim.workload.traces.schema import DEFAULT_HASH_BLOCK_TOKENS

ARRAY_SUFFIX = ".rows.npy"
ROW_DTYPE = np.dtype([("arrival_s", np.float64), ("prompt_len", np.int32), ("output_len", np.int32)])


def array_path(shipped: ShippedTrace) -> Path:
    """Where the rows of a shipped trace live as an array (beside it, `.csv.gz` replaced)."""
    name = shipped.path.name.removesuffix(".gz").removesuffix(".csv").removesuffix(".jsonl")
    return shipped.path.with_name(name + ARRAY_SUFFIX)


def parse_rows(shipped: ShippedTrace) -> np.ndarray | None:
    """The trace's rows parsed with the reader's checks, as ROW_DTYPE records; None when a row
    carries more than a time and two lengths (hashes, a block size, attributes)."""
    out = []
    for t, prompt, output, hashes, block, attrs in TraceReader(shipped.path, display_name=shipped.name).rows():
        if t is None or hashes or block != DEFAULT_HASH_BLOCK_TOKENS or attrs or max(prompt, output) >= 2**31:
            return None
        out.append((t, prompt, output))
    return np.array(out, dtype=ROW_DTYPE)


def read_rows(shipped: ShippedTrace | None) -> np.ndarray | None:
    """The array of a shipped trace's rows, None if it has none (read it row by row)."""
    if shipped is None or not shipped.has_arrival or not array_path(shipped).is_file():
        return None
    return np.load(array_path(shipped), allow_pickle=False)


def build_arrays() -> list[Path]:
    """Write the array of every shipped trace whose rows are only a time and two lengths."""
    written = []
    for shipped in {t.relpath: t for t in SHIPPED_TRACES.values() if t.has_arrival}.values():
        rows = parse_rows(shipped)
        if rows is not None:
            np.save(array_path(shipped), rows, allow_pickle=False)
            written.append(array_path(shipped))
    return written


if __name__ == "__main__":
    for p in build_arrays():
        print(f"wrote {p}")
