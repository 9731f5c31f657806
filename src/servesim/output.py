"""Writing a run folder: scenario.yaml, summary.json, requests.csv|parquet, timeseries.csv.

Files are first written into a temporary sibling folder which is renamed into place at the
end, so a failed run never leaves half-written results.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import yaml

from servesim.csv_cells import number_texts
from servesim.errors import InputError
from servesim.metrics.request_table import NONE_ID
from servesim.metrics.step_helper import helper_wanted
from servesim.metrics.summary import STATE_NAMES, RequestColumns
from servesim.metrics.timeseries import COLUMNS as TS_COLUMNS

SCALE_EVENT_COLUMNS = ("time_s", "num_ready", "num_starting", "num_draining", "num_queued", "metric", "desired",
                       "action", "delta", "pool")
from servesim.result import Result

REQUEST_COLUMNS = ("id", "tenant", "priority", "slo_class", "is_offline", "session_id", "program_id", "arrival_s",
                   "prompt_len", "output_len", "num_output_tokens", "state", "first_scheduled_s", "first_token_s",
                   "finish_s", "ttft_s", "tpot_s", "e2e_s", "num_preemptions", "num_cached_tokens")


CLUSTER_COLUMNS = ("replica", "pool", "num_reroutes")  # added when the run has a cluster


def request_columns(result: Result) -> tuple[str, ...]:
    return REQUEST_COLUMNS + (CLUSTER_COLUMNS if result.cluster is not None else ())


#: Rows turned into Python values at a time, so writing holds one chunk (a Parquet row group).
ROW_CHUNK = 65536
#: Rows turned into CSV lines at a time: the chunk's Python values (about 1 kB a row) are what
#: writing requests.csv holds, so this many, not ROW_CHUNK (65,536 rows cost ~70 MB).
CSV_ROWS = 8192


def column_values(result: Result, name: str, start: int = 0, stop: int | None = None) -> list:
    """Column `name` of requests.csv for rows `start` to `stop`, as Python values (None where a
    value does not exist; TTFT, TPOT and E2E are NaN there, as computed)."""
    t, sl = result.table, slice(start, stop)
    c = t.cols
    if name in ("ttft_s", "tpot_s", "e2e_s"):  # (element-wise: the slice's values are the column's)
        return getattr(t.request_columns(sl), name).tolist()
    if name in ("tenant", "slo_class"):
        return t.labels(name, sl).tolist()
    if name == "state":
        return [STATE_NAMES[x] for x in c["state"][sl].tolist()]
    if name == "is_offline":
        return c["is_offline"][sl].astype(np.int64).tolist()
    if name in ("replica", "pool"):  # the replica that served it last (none if it never reached one)
        pools = [r.pool for r in result.replicas or ()]
        return [None if x < 0 else x if name == "replica" else pools[x] for x in c["replica"][sl].tolist()]
    v = c[name][sl]
    out = v.tolist()
    if name in OPTIONAL:
        for i in np.flatnonzero((v == NONE_ID) if v.dtype.kind == "i" else np.isnan(v)).tolist():
            out[i] = None
    return out


OPTIONAL = ("session_id", "program_id", "first_scheduled_s", "first_token_s", "finish_s")


def request_rows(result: Result, start: int = 0, stop: int | None = None):
    """The rows of requests.csv from `start` to `stop`, as tuples of Python values."""
    return zip(*[column_values(result, name, start, stop) for name in request_columns(result)])


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        return "" if math.isnan(v) else repr(float(v))
    return v


#: Columns of requests.csv that hold strings (or None); the others hold numbers (or None).
TEXT_COLUMNS = frozenset({"tenant", "slo_class", "state", "pool"})


def column_cells(result: Result, name: str, start: int, stop: int,
                 derived: RequestColumns | None = None) -> list[str]:
    """The cells of requests.csv's column `name` for rows `start` to `stop`: strings by
    `_csv_texts` of `column_values`, numbers made from their arrays (csv_cells.py) with no
    call per cell. `derived`, the rows' `request_columns` if the caller has read them, gives
    TTFT, TPOT and E2E (read once for the three, not once each)."""
    if name in TEXT_COLUMNS:
        return _csv_texts(column_values(result, name, start, stop))
    t, sl = result.table, slice(start, stop)
    if name in ("ttft_s", "tpot_s", "e2e_s"):
        return number_texts(getattr(derived or t.request_columns(sl), name))
    v = t.cols[name][sl]
    if name == "replica":
        return number_texts(v, v < 0)
    if v.dtype.kind == "b":  # (is_offline: 0 or 1)
        return number_texts(v.astype(np.int64))
    return number_texts(v, (v == NONE_ID) if name in OPTIONAL and v.dtype.kind == "i" else None)


def _csv_texts(values: list) -> list[str]:
    """The cells `csv.writer` writes for a column of strings (or None), made a column at a
    time: quoted as the writer quotes them, each distinct string once, None empty."""
    cells = {v: _csv_cell(v) for v in set(values)}
    return list(map(cells.__getitem__, values))


def _csv_cell(value: str | None) -> str:
    if value is None:
        return ""
    buf = io.StringIO()
    csv.writer(buf).writerow([value, ""])  # (a second field: a lone empty string is quoted)
    return buf.getvalue()[:-3]


def _write_lines(f, columns: list[list[str]]) -> None:
    """Rows of cells as csv.writer's lines (comma-separated, CRLF-terminated): the cells and
    their separators interleaved in one list by slice assignments and joined once, which makes
    no tuple and no join per row (about a third less than joining each row of `zip(*columns)`)."""
    if columns and columns[0]:
        k, rows = 2 * len(columns), len(columns[0])
        parts = [","] * (k * rows)
        for i, cells in enumerate(columns):
            parts[2 * i::k] = cells
        parts[k - 1::k] = ["\r\n"] * rows  # (in place of the comma after each row's last cell)
        f.write("".join(parts))


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


#: Every file a run folder may hold; a run removes those it did not write (e.g. the report.html
#: of an earlier run with --report), so the folder never mixes runs.
RUN_FILES = ("scenario.yaml", "summary.json", "requests.csv", "requests.parquet", "timeseries.csv", "report.html")


def out_dir_option(value: str | None, default: Path) -> Path:
    """The folder named by `--out` (`default` when not given); an empty name is an error."""
    if value is None:
        return default
    if not value.strip():
        raise InputError("--out is empty; name an output folder, e.g. --out out/run1")
    return Path(value)


def check_out_dir(out_dir: Path) -> None:
    """Fail now, before a long simulation, if the run folder cannot be written."""
    try:
        if out_dir.exists() and not out_dir.is_dir():
            raise InputError(f"--out '{out_dir}' exists and is not a folder")
        existing = out_dir
        while not existing.exists():  # the folder, or its nearest existing ancestor
            existing = existing.parent
        if not existing.is_dir():
            raise InputError(f"--out '{out_dir}': '{existing}' is a file, not a folder")
        os.rmdir(tempfile.mkdtemp(prefix=".servesim-check.", dir=existing))  # can we create in it?
    except OSError as e:
        raise InputError(f"--out '{out_dir}': cannot write there ({e.strerror or e})") from None


def write_run(result: Result, out_dir: Path, summary: dict | None = None) -> Path:
    """Write the run folder atomically; returns its path."""
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    exists = out_dir.exists()
    if not exists:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    # staged inside an existing folder (moved up file by file), else beside it (renamed into place)
    tmp = Path(tempfile.mkdtemp(prefix=".servesim-run.", dir=out_dir if exists else out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; a results folder is an ordinary one
    try:
        _write_files(result, tmp, summary or result.summary())
        if exists:
            written = {child.name for child in tmp.iterdir()}
            for name in RUN_FILES:  # our files from an earlier run that this one does not rewrite
                if name not in written and (out_dir / name).is_file():
                    (out_dir / name).unlink()
            for child in tmp.iterdir():  # replace our own files, keep anything else the user put there
                if (out_dir / child.name).is_dir():
                    raise InputError(f"'{out_dir / child.name}' is a folder; remove it or choose another --out")
                child.replace(out_dir / child.name)
            tmp.rmdir()
        else:
            tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _write_files(result: Result, folder: Path, summary: dict) -> None:
    resolved = result.scenario.model_dump(mode="json")
    resolved["engine"] = result.engine_config.model_dump(mode="json")
    (folder / "scenario.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    (folder / "summary.json").write_text(json.dumps(_jsonable(summary), indent=2) + "\n")
    name = requests_file(result)
    if not _take_prepared(result, folder / name):
        _write_requests(result, folder / name)
    with open(folder / "timeseries.csv", "w", newline="") as f:
        w = csv.writer(f)
        names = None
        for ts in result.timeseries_blocks():  # built a block of intervals at a time
            if names is None:
                names = list(TS_COLUMNS) + [c for c in ts if c not in TS_COLUMNS]  # + elastic columns when scaling
                w.writerow(names)
            for start in range(0, len(ts["time_s"]), CSV_ROWS):  # a chunk of rows as Python values at a time
                _write_lines(f, [number_texts(np.asarray(ts[c][start:start + CSV_ROWS], dtype=np.float64))
                                 for c in names])
    if result.scale_events is not None:
        with open(folder / "scale_events.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(SCALE_EVENT_COLUMNS)
            w.writerows([_cell(getattr(e, c)) for c in SCALE_EVENT_COLUMNS] for e in result.scale_events)


def requests_file(result: Result) -> str:
    """The name of the run folder's requests file (`output.requests_format`)."""
    return "requests.parquet" if result.scenario.output.requests_format == "parquet" else "requests.csv"


def _write_requests(result: Result, path: Path) -> None:
    if path.suffix == ".parquet":
        _write_parquet(result, path)
        return
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(request_columns(result))
        n = len(result.table)
        for start in range(0, n, CSV_ROWS):  # written a chunk at a time, formatted a column at a time
            derived = result.table.request_columns(slice(start, start + CSV_ROWS))
            _write_lines(f, [column_cells(result, name, start, start + CSV_ROWS, derived)
                             for name in request_columns(result)])


def prepare_requests(result: Result) -> bool:
    """Start writing the requests file of `result`'s run folder now, in a forked process on
    the second core, so that it is made while this process computes the summary and the time
    series; `write_run` then waits for it and copies it in (or writes it itself if that
    process failed). For a caller that writes the run folder next (the CLI, comparisons):
    the file is the one `write_run` writes, the same function over the same table. Only
    for rows spilled to files (`simulate(keep_requests=False)`: nothing the summary does
    changes them) and where a fork is safe (step_helper.helper_wanted). True if started."""
    if result.spill is None or not result.table.spilled or not helper_wanted() or result.prepared_requests is not None:
        return False
    path = Path(result.spill.name) / requests_file(result)
    pid = os.fork()
    if pid == 0:  # the child: write and leave, without the parent's exit handlers or buffers
        code = 1
        try:
            _write_requests(result, path)
            code = 0
        finally:
            os._exit(code)
    result.prepared_requests = (pid, path)
    return True


def _take_prepared(result: Result, dest: Path) -> bool:
    """Wait for the requests file `prepare_requests` started and copy it to `dest`; False
    if none was started or it failed (then the caller writes it)."""
    if result.prepared_requests is None:
        return False
    (pid, path), result.prepared_requests = result.prepared_requests, None
    _, status = os.waitpid(pid, 0)
    if status != 0 or not path.is_file():
        return False
    try:
        os.replace(path, dest)  # (the spill folder on the same file system)
    except OSError:
        shutil.copyfile(path, dest)
        path.unlink()
    return True


def _write_parquet(result: Result, path: Path) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError("output.requests_format=parquet needs pyarrow: pip install 'servesim[parquet]'") from None
    # a row group per chunk of rows, so writing holds one chunk; each column's type is the one
    # pyarrow infers from its values (the first chunk with a value decides; all None: null)
    names = request_columns(result)
    n = len(result.table)
    types = {name: _arrow_type(result, name, n, pa) for name in names}
    schema = pa.schema([(name, types[name]) for name in names])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, n, ROW_CHUNK):
            stop = start + ROW_CHUNK
            writer.write_table(pa.table([_arrow_column(result, name, start, stop, pa, types[name])
                                         for name in names], schema=schema))


def _arrow_type(result: Result, name: str, n: int, pa):
    for start in range(0, n, ROW_CHUNK):
        t = _arrow_column(result, name, start, start + ROW_CHUNK, pa).type
        if not pa.types.is_null(t):
            return t
    return pa.null()


#: the type pyarrow infers from a numeric column's Python values (`tolist`), by numpy kind
_INFERRED = {"b": "bool_", "i": "int64", "u": "int64", "f": "float64"}


def _arrow_column(result: Result, name: str, start: int, stop: int, pa, type=None):
    """`pa.array(column_values(...), type)` without a Python value per cell for the numeric
    columns: their numpy slice, with the cells `column_values` gives as None masked (the same
    array: the type is the one pyarrow infers from those values unless given; all None: null)."""
    if name in TEXT_COLUMNS:
        return pa.array(column_values(result, name, start, stop), type=type)
    t, sl = result.table, slice(start, stop)
    mask = None
    if name in ("ttft_s", "tpot_s", "e2e_s"):
        v = getattr(t.request_columns(sl), name)  # (NaN where undefined, as `column_values`)
    else:
        v = t.cols[name][sl]
        if name == "is_offline":
            v = v.astype(np.int64)
        elif name == "replica":
            mask = v < 0
        elif name in OPTIONAL:
            mask = (v == NONE_ID) if v.dtype.kind == "i" else np.isnan(v)
    if mask is not None and not mask.any():
        mask = None
    if type is None:
        type = pa.null() if mask is not None and mask.all() else getattr(pa, _INFERRED[v.dtype.kind])()
    if pa.types.is_null(type):
        return pa.nulls(len(v))
    return pa.array(v, type=type, mask=mask)
