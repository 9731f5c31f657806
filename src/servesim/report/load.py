"""Read a run folder (the core's output contract) into plain data.

Only files are read here; nothing from the simulation is imported. Missing optional files
(`requests.csv`, `timeseries.csv`) leave their fields empty so the report can say what is
absent; a missing or unreadable `summary.json` is an `InputError` because it is what makes a
folder a run folder.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from servesim.errors import InputError

#: requests.csv columns the report reads as numbers (seconds or counts); empty cell -> NaN.
REQUEST_NUMBER_COLUMNS = ("arrival_s", "ttft_s", "tpot_s", "e2e_s", "prompt_len", "num_output_tokens")
#: requests.csv columns the report reads as text.
REQUEST_TEXT_COLUMNS = ("tenant", "slo_class", "state")
#: timeseries.csv columns, all numeric.
TIMESERIES_COLUMNS = (
    "time_s", "interval_s", "arrivals", "finished", "prompt_tokens", "output_tokens",
    "num_running", "num_waiting", "kv_usage",
)
#: timeseries.csv columns of elastic or power-managed runs only.
ELASTIC_TIMESERIES_COLUMNS = ("num_replicas", "power_w", "cost_usd")


@dataclass
class RunData:
    """Everything a report shows about one run, as plain Python/numpy values."""

    path: Path
    """The run folder."""
    scenario: dict[str, Any]
    """The resolved scenario (empty when scenario.yaml is absent)."""
    summary: dict[str, Any]
    """summary.json as loaded."""
    requests: dict[str, np.ndarray] = field(default_factory=dict)
    """Column name -> array (float with NaN for numbers, object for text); empty if absent."""
    timeseries: dict[str, np.ndarray] = field(default_factory=dict)
    """Column name -> float array; empty if timeseries.csv is absent."""
    scale_events: dict[str, np.ndarray] = field(default_factory=dict)
    """scale_events.csv's decision times, replicas ready and starting, and pools; empty if absent."""
    notes: list[str] = field(default_factory=list)
    """Human-readable remarks about missing inputs, shown on the page."""

    @property
    def num_request_rows(self) -> int:
        return len(next(iter(self.requests.values()))) if self.requests else 0


def load_run(run_dir: Path) -> RunData:
    """Read one run folder; raise `InputError` if it is not a readable servesim run folder."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"OUT_DIR '{run_dir}' does not exist or is not a folder")
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise InputError(f"OUT_DIR '{run_dir}' has no summary.json; is it a servesim run folder?")
    run = RunData(path=run_dir, scenario=_load_scenario(run_dir / "scenario.yaml"),
                  summary=_load_summary(summary_path))
    if not run.scenario:
        run.notes.append("scenario.yaml not found; scenario details omitted.")
    run.requests = _load_requests(run_dir, run.notes)
    run.timeseries = _load_timeseries(run_dir / "timeseries.csv", run.notes)
    if (run_dir / "scale_events.csv").is_file():
        run.scale_events = _read_columns(run_dir / "scale_events.csv", ("time_s", "num_ready", "num_starting"), ("pool",))
    return run


def _load_summary(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"'{path}' is not valid JSON: {_first_line(exc)}") from None
    if not isinstance(data, dict):
        raise InputError(f"'{path}' must hold a JSON object, got {type(data).__name__}")
    return data


def _load_scenario(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"'{path}' is not valid YAML: {_first_line(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"'{path}' must hold a mapping, got {type(data).__name__}")
    return data


def _load_requests(run_dir: Path, notes: list[str]) -> dict[str, np.ndarray]:
    csv_path, parquet_path = run_dir / "requests.csv", run_dir / "requests.parquet"
    if csv_path.is_file():
        return _read_columns(csv_path, REQUEST_NUMBER_COLUMNS, REQUEST_TEXT_COLUMNS)
    if parquet_path.is_file():
        return _load_requests_parquet(parquet_path, notes)
    notes.append("requests.csv not found; latency distributions omitted.")
    return {}


def _load_requests_parquet(path: Path, notes: list[str]) -> dict[str, np.ndarray]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        notes.append("requests.parquet needs pyarrow (pip install 'servesim[parquet]'); "
                     "latency distributions omitted.")
        return {}
    try:
        present = set(pq.read_schema(path).names)
        wanted = [n for n in REQUEST_NUMBER_COLUMNS + REQUEST_TEXT_COLUMNS if n in present]
        table = pq.read_table(path, columns=wanted)
    except Exception as exc:  # pyarrow raises several unrelated types for bad files
        raise InputError(f"'{path}' is not a readable parquet file: {_first_line(exc)}") from None
    out: dict[str, np.ndarray] = {}
    for name in REQUEST_NUMBER_COLUMNS:
        if name in present:  # nulls become NaN in the float array
            out[name] = np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=float)
    for name in REQUEST_TEXT_COLUMNS:
        if name in present:
            labels: dict[str, str] = {}
            values = table.column(name).to_pylist()
            out[name] = _text_array(["" if v is None else labels.setdefault(str(v), str(v)) for v in values])
    return out


def _load_timeseries(path: Path, notes: list[str]) -> dict[str, np.ndarray]:
    if not path.is_file():
        notes.append("timeseries.csv not found; time series omitted.")
        return {}
    return _read_columns(path, TIMESERIES_COLUMNS + ELASTIC_TIMESERIES_COLUMNS, ())


#: Rows read between conversions (about 10 MB of them as text): a run's file is never held whole, only the wanted
#: columns as arrays (a 200,000-request run's report peaked at 307 MB reading it whole, 109 MB so).
_CHUNK_ROWS = 8192


def _read_columns(path: Path, numbers: tuple[str, ...], texts: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The wanted columns that are present, read a chunk of rows at a time.

    Numbers become floats with NaN for blank cells; a text column's equal values share one
    string object (a run's states and tenants repeat), so each costs a pointer a row.
    """
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise InputError(f"'{path}' is empty; expected a header row")
            index = {name.strip(): i for i, name in enumerate(header)}
            wanted = [(name, index[name], True) for name in numbers if name in index]
            wanted += [(name, index[name], False) for name in texts if name in index]
            parts: dict[str, list[np.ndarray]] = {name: [] for name, _, _ in wanted}
            labels: dict[str, str] = {}
            line = 2  # the file's line of the chunk's first row
            while True:
                rows = list(itertools.islice(reader, _CHUNK_ROWS))
                if not rows:
                    break
                for name, i, is_number in wanted:
                    cells = [row[i] if i < len(row) else "" for row in rows]
                    parts[name].append(_numbers(path, name, line, cells) if is_number
                                       else _text_array([labels.setdefault(c, c) for c in cells]))
                line += len(rows)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"'{path}' is not a readable CSV file: {_first_line(exc)}") from None
    return {name: (np.concatenate(chunks) if chunks else np.empty(0, dtype=float if is_number else object))
            for (name, _, is_number), chunks in zip(wanted, parts.values())}


def _numbers(path: Path, name: str, first_line: int, cells: list[str]) -> np.ndarray:
    try:  # the usual chunk: every cell a number, converted by float() in C
        return np.array(list(map(float, cells)), dtype=float)
    except ValueError:
        pass
    values = np.empty(len(cells))
    for k, raw in enumerate(cells):
        cell = raw.strip()
        if not cell:
            values[k] = math.nan
            continue
        try:
            values[k] = float(cell)
        except ValueError:
            raise InputError(f"'{path}' line {first_line + k}: column {name} holds '{cell}', "
                             "expected a number or an empty cell") from None
    return values


def _text_array(values: list[str]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
