"""Streaming trace writers: the canonical CSV schema and Mooncake-style JSONL.

CSV columns: arrival_s, prompt_len, output_len, then hash_ids (space-separated) and
hash_block_tokens when the trace has prefix hashes, then the attribute columns that are set on
any of the first requests. JSONL objects use Mooncake's keys (timestamp in ms, input_length,
output_length, hash_ids) plus any non-default attribute, so Mooncake tools can read them.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import itertools
import json
from pathlib import Path
from typing import Any, Iterable, Iterator, TextIO

from servesim.errors import InputError
from servesim.workload.request import Request
from servesim.workload.traces import schema
from servesim.workload.traces.readers import trace_format

PEEK = 1000  # requests inspected to choose the optional CSV columns
_DEFAULTS = {name: Request.__dataclass_fields__[field].default for name, (field, _) in schema.ATTRIBUTE_COLUMNS.items()}


@contextlib.contextmanager
def open_out(path: Path, name: str | None = None) -> Iterator[TextIO]:
    """A text stream writing `path` (gzip-compressed for .gz; `name` goes into the gzip header)."""
    try:
        raw = open(path, "wb")
    except OSError as exc:
        raise InputError(f"cannot write {name or path}: {exc.strerror or exc}") from None
    with raw:
        if (name or path.name).endswith(".gz"):
            with gzip.GzipFile(filename=name or path.name, mode="wb", fileobj=raw, compresslevel=6) as gz, \
                    io.TextIOWrapper(gz, encoding="utf-8", newline="") as text:
                yield text
        else:
            with io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
                yield text


def _attributes(req: Request) -> Iterator[tuple[str, Any]]:
    for column, (field, _) in schema.ATTRIBUTE_COLUMNS.items():
        value = getattr(req, field)
        if value != _DEFAULTS[column]:
            yield column, value


def write_csv(requests: Iterable[Request], out: TextIO) -> int:
    it = iter(requests)
    head = list(itertools.islice(it, PEEK))
    hashed = any(r.hash_ids for r in head)
    attrs = sorted({c for r in head for c, _ in _attributes(r)}, key=list(schema.ATTRIBUTE_COLUMNS).index)
    columns = ["arrival_s", "prompt_len", "output_len"] + (["hash_ids", "hash_block_tokens"] if hashed else []) + attrs
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    n = 0
    for req in itertools.chain(head, it):
        row: list[Any] = [repr(req.arrival_s), req.prompt_len, req.output_len]
        if hashed:
            row += [" ".join(map(str, req.hash_ids)), req.hash_block_tokens]
        for column in attrs:
            value = getattr(req, schema.ATTRIBUTE_COLUMNS[column][0])
            row.append("" if value is None else (int(value) if isinstance(value, bool) else value))
        writer.writerow(row)
        n += 1
    return n


def write_jsonl(requests: Iterable[Request], out: TextIO) -> int:
    n = 0
    for req in requests:
        ms = req.arrival_s * 1000.0
        obj: dict[str, Any] = {
            "timestamp": int(ms) if ms == int(ms) else round(ms, 3),
            "input_length": req.prompt_len,
            "output_length": req.output_len,
        }
        if req.hash_ids:
            obj["hash_ids"] = list(req.hash_ids)
            if req.hash_block_tokens != schema.DEFAULT_HASH_BLOCK_TOKENS:
                obj["hash_block_tokens"] = req.hash_block_tokens
        obj.update(_attributes(req))
        out.write(json.dumps(obj, separators=(", ", ": ")))
        out.write("\n")
        n += 1
    return n


def write_trace(requests: Iterable[Request], path: str | Path) -> int:
    """Write requests to `path` (.csv/.jsonl, optionally .gz); returns the number of rows."""
    path = Path(path)
    fmt = trace_format(path)
    if path.is_dir():
        raise InputError(f"cannot write {path}: it is a folder")
    # written beside the destination and renamed at the end: a failure leaves no partial file
    partial = path.with_name(f".{path.name}.partial")
    try:
        with open_out(partial, path.name) as out:
            n = write_csv(requests, out) if fmt == "csv" else write_jsonl(requests, out)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return n
