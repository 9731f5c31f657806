"""Length tables (prompt and output tokens per row): read from a CSV/JSONL file, or for a shipped
table from the `.lengths.npy` file built beside it.

A session or ShareGPT workload samples whole rows of a table of about 30,000 rows. Parsing the
shipped CSV row by row with the trace reader's checks took about 60 ms of every such run (a
third of a 200-request sessions cell); the same two columns as a numpy array load in under a
millisecond. The arrays are derived data, built from the shipped CSVs by

    python -m servesim.workload.length_tables

and `tests/workload/test_length_tables.py` checks that each equals its source, so they cannot
drift from it. A shipped table without its array (or a user's file) is parsed as before.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from servesim.errors import InputError
from servesim.workload.traces.registry import SHIPPED_TRACES, ShippedTrace, resolve_trace

ARRAY_SUFFIX = ".lengths.npy"


def array_path(shipped: ShippedTrace) -> Path:
    """Where the array of a shipped length table lives (beside its CSV, `.csv.gz` replaced)."""
    name = shipped.path.name.removesuffix(".gz").removesuffix(".csv")
    return shipped.path.with_name(name + ARRAY_SUFFIX)


def parse_length_table(path: Path, display: str) -> tuple[np.ndarray, np.ndarray]:
    """(prompt_lens, output_lens) of every row of a trace-format file, parsed with the trace
    reader's checks (a bad cell is an InputError naming file, line and column)."""
    from servesim.workload.traces.readers import TraceReader

    prompts: list[int] = []
    outputs: list[int] = []
    for row in TraceReader(path, display_name=display).rows():
        prompts.append(row[1])
        outputs.append(row[2])
    return np.asarray(prompts, dtype=np.int64), np.asarray(outputs, dtype=np.int64)


def read_length_table(name_or_path: str) -> tuple[np.ndarray, np.ndarray]:
    """(prompt_lens, output_lens), int64, of a shipped table's name or a file's path."""
    path, display, shipped = resolve_trace(name_or_path)
    if shipped is not None and not shipped.has_arrival and array_path(shipped).is_file():
        prompts, outputs = np.load(array_path(shipped)).astype(np.int64)
    else:
        prompts, outputs = parse_length_table(path, display)
    if not len(prompts):
        raise InputError(f"lengths.dataset {name_or_path!r} has no rows")
    return prompts, outputs


def length_tables() -> list[ShippedTrace]:
    """The shipped length tables (rows without arrival times), one entry per file."""
    by_file = {t.relpath: t for t in SHIPPED_TRACES.values() if not t.has_arrival}
    return list(by_file.values())


def build_arrays() -> list[Path]:
    """Write the array of every shipped length table (the smallest integer type that holds it)."""
    written = []
    for shipped in length_tables():
        table = np.stack(parse_length_table(shipped.path, shipped.name))
        dtype = next(t for t in (np.int16, np.int32, np.int64)
                     if np.iinfo(t).min <= table.min() and table.max() <= np.iinfo(t).max)
        np.save(array_path(shipped), table.astype(dtype), allow_pickle=False)
        written.append(array_path(shipped))
    return written


if __name__ == "__main__":
    for p in build_arrays():
        print(f"wrote {p}")
