"""Streaming trace readers (CSV and JSONL, optionally gzip-compressed).

Rows are parsed one at a time from the open file, so a trace of any length is replayed in
constant memory. A bad cell raises `InputError` naming file, line and column, or, with
`skip_bad_rows`, is counted in `skipped_rows` and the row dropped.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

from servesim.errors import InputError
from servesim.workload.traces import schema
from servesim.workload.traces.schema import CellError

# One parsed row: (arrival seconds or None, prompt_len, output_len, hash_ids, hash_block_tokens,
# attributes dict or None). A plain tuple because it is built once per request on the hot path.
Row = tuple[float | None, int, int, tuple[int, ...], int, dict[str, Any] | None]


def trace_format(path: Path) -> str:
    """'csv' or 'jsonl', from the file name (a '.gz' suffix is ignored)."""
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if name.endswith((".csv", ".txt")):
        return "csv"
    raise InputError(f"{path}: unknown trace format; use a .csv, .jsonl, .csv.gz or .jsonl.gz file")


def open_text(path: Path) -> TextIO:
    """Open a possibly gzip-compressed text file for reading."""
    # utf-8-sig: a byte-order mark (as spreadsheet programs write) is not part of the first column's name
    try:
        if path.is_dir():
            raise InputError(f"trace {path} is a folder; give a .csv or .jsonl(.gz) file")
        if path.name.endswith(".gz"):
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
        return open(path, encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise InputError(f"cannot open trace {path}: {exc.strerror or exc}") from None


def _arrival_parser(names: Any) -> tuple[str | None, Callable[[Any], float] | None]:
    """(column, parser to seconds) for the first arrival column present, else (None, None)."""
    for col in schema.ARRIVAL_SECONDS:
        if col in names:
            return col, schema.parse_seconds
    for col in schema.ARRIVAL_MS:
        if col in names:
            return col, lambda raw: schema.parse_seconds(raw) / 1000.0
    for col in schema.ARRIVAL_DATETIME:
        if col in names:
            return col, schema.DatetimeParser()
    return None, None


def _first(names: Any, options: tuple[str, ...], what: str, where: str) -> str:
    for col in options:
        if col in names:
            return col
    raise InputError(f"{where}: no {what} column; expected one of {', '.join(options)}")


class TraceReader:
    """Iterate the rows of one trace file. `display_name` is what error messages call it."""

    def __init__(self, path: str | Path, *, display_name: str | None = None, skip_bad_rows: bool = False):
        self.path = Path(path)
        self.display_name = display_name or self.path.name
        self.format = trace_format(self.path)
        self.skip_bad_rows = skip_bad_rows
        self.skipped_rows = 0
        self.has_arrival: bool | None = None  # known once iteration has started
        self.has_hashes: bool | None = None

    def rows(self) -> Iterator[Row]:
        """Parsed rows in file order; arrival times are checked to be non-decreasing."""
        last_t = -1.0
        rows = self._checked(self._csv_rows() if self.format == "csv" else self._jsonl_rows())
        for line, arrival_col, row in rows:
            t = row[0]
            if t is not None:
                if t < last_t:
                    self._bad(line, arrival_col, f"{t!r} s is earlier than the previous row; rows must be sorted by time")
                    continue
                last_t = t
            yield row

    def _checked(self, rows: Iterator[tuple[int, str | None, Row]]) -> Iterator[tuple[int, str | None, Row]]:
        """The rows, with a file that is not text (or not the gzip it claims) as one InputError."""
        try:
            yield from rows
        except UnicodeDecodeError as exc:
            raise InputError(f"{self.display_name}: not a UTF-8 text file (found byte 0x{exc.object[exc.start]:02x}); "
                             "a trace is CSV or JSON Lines text") from None
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise InputError(f"{self.display_name}: not a readable gzip file ({exc}); "
                             "compress it again or drop the .gz suffix") from None
        except csv.Error as exc:
            raise InputError(f"{self.display_name}: not a CSV text file ({exc})") from None
        except OSError as exc:
            raise InputError(f"cannot read trace {self.display_name}: {exc.strerror or exc}") from None

    def _bad(self, line: int, column: str | None, problem: str) -> None:
        if not self.skip_bad_rows:
            kind = "column" if self.format == "csv" else "field"
            where = f"{self.display_name} line {line}" + (f", {kind} {column}" if column else "")
            raise InputError(f"{where}: {problem}")
        self.skipped_rows += 1

    def _csv_rows(self) -> Iterator[tuple[int, str | None, Row]]:
        with open_text(self.path) as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise InputError(f"{self.display_name}: empty file (expected a header line)")
            header = [h.strip() for h in header]
            index = {name: i for i, name in enumerate(header)}
            arrival_col, parse_t = _arrival_parser(index)
            prompt_col = _first(index, schema.PROMPT_COLUMNS, "prompt length", self.display_name)
            output_col = _first(index, schema.OUTPUT_COLUMNS, "output length", self.display_name)
            ai = index[arrival_col] if arrival_col else -1
            pi, oi = index[prompt_col], index[output_col]
            hi = index.get(schema.HASH_COLUMN, -1)
            bi = index.get(schema.HASH_BLOCK_COLUMN, -1)
            extras = [(index[c], c, f, p) for c, (f, p) in schema.ATTRIBUTE_COLUMNS.items() if c in index]
            self.has_arrival, self.has_hashes = ai >= 0, hi >= 0
            width = len(header)
            default_block = schema.DEFAULT_HASH_BLOCK_TOKENS
            parse_count = schema.parse_count
            for cells in reader:
                line = reader.line_num
                if len(cells) != width:
                    if not cells:
                        continue  # blank line
                    self._bad(line, None, f"has {len(cells)} fields, the header has {width}")
                    continue
                col = arrival_col
                try:
                    t = parse_t(cells[ai]) if ai >= 0 else None  # type: ignore[misc]
                    col = prompt_col
                    prompt = parse_count(cells[pi])
                    col = output_col
                    output = parse_count(cells[oi])
                    hashes: tuple[int, ...] = ()
                    block = default_block
                    if hi >= 0:
                        col = schema.HASH_COLUMN
                        hashes = schema.parse_hash_ids(cells[hi])
                    if bi >= 0 and cells[bi]:
                        col = schema.HASH_BLOCK_COLUMN
                        block = parse_count(cells[bi]) or default_block
                    attrs = None
                    for i, col, field_name, parse in extras:
                        if cells[i] != "":
                            if attrs is None:
                                attrs = {}
                            attrs[field_name] = parse(cells[i])
                except CellError as exc:
                    self._bad(line, col, str(exc))
                    continue
                yield line, arrival_col, (t, prompt, output, hashes, block, attrs)

    def _jsonl_rows(self) -> Iterator[tuple[int, str | None, Row]]:
        default_block = schema.DEFAULT_HASH_BLOCK_TOKENS
        parse_count = schema.parse_count
        attribute_keys = schema.ATTRIBUTE_COLUMNS.keys()
        with open_text(self.path) as fh:
            arrival_col = prompt_col = output_col = None
            parse_t: Callable[[Any], float] | None = None
            for line, text in enumerate(fh, start=1):
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as exc:
                    self._bad(line, None, f"not valid JSON ({exc.msg})")
                    continue
                if not isinstance(obj, dict):
                    self._bad(line, None, "not a JSON object")
                    continue
                if prompt_col is None:  # the first object fixes the key names of the file
                    arrival_col, parse_t = _arrival_parser(obj)
                    prompt_col = _first(obj, schema.PROMPT_COLUMNS, "prompt length", f"{self.display_name} line {line}")
                    output_col = _first(obj, schema.OUTPUT_COLUMNS, "output length", f"{self.display_name} line {line}")
                    self.has_arrival = arrival_col is not None
                    self.has_hashes = schema.HASH_COLUMN in obj
                col = arrival_col
                try:
                    t = parse_t(obj[arrival_col]) if parse_t is not None else None
                    col = prompt_col
                    prompt = parse_count(obj[prompt_col])
                    col = output_col
                    output = parse_count(obj[output_col])
                    raw_hashes = obj.get(schema.HASH_COLUMN)
                    col = schema.HASH_COLUMN
                    hashes = () if raw_hashes is None else schema.parse_hash_ids(raw_hashes)
                    col = schema.HASH_BLOCK_COLUMN
                    block = parse_count(obj.get(col) or default_block)
                    attrs = None
                    if not attribute_keys.isdisjoint(obj):  # (a C-level test: most rows have none)
                        for col, (field_name, parse) in schema.ATTRIBUTE_COLUMNS.items():
                            raw = obj.get(col)
                            if raw is not None and raw != "":
                                if attrs is None:
                                    attrs = {}
                                attrs[field_name] = parse(raw)
                except KeyError as exc:
                    self._bad(line, None, f"missing field {exc.args[0]}")
                    continue
                except CellError as exc:
                    self._bad(line, col, str(exc))
                    continue
                yield line, arrival_col, (t, prompt, output, hashes, block, attrs)
