"""Reading measured performance points (the schema of the shipped data/measured/measured_points.csv).

Columns: source, model, gpu, tp, batch, input_len, output_len, metric, value, unit, notes; an
optional `engine` and `dtype` column overrides what is otherwise read from source and notes.
Bad rows raise InputError naming the file, line and column.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from servesim.errors import InputError

# The shipped points (data/measured/README.md): what the model is validated and calibrated against
MEASURED_POINTS = Path(__file__).parent / "data" / "measured" / "measured_points.csv"
COLUMNS = ("source", "model", "gpu", "tp", "batch", "input_len", "output_len", "metric", "value", "unit", "notes")
METRICS = ("output_throughput", "output_throughput_per_gpu", "first_token_latency", "prefill_time",
           "prefill_time_batch", "decode_step_time", "decode_time_total", "e2e_latency", "linear_layer_time",
           "all_reduce_time", "kv_cache_per_request", "max_concurrency")
UNIT_SCALE = {"ms": 1e-3, "s": 1.0, "us": 1e-6, "tok/s": 1.0, "tok/s/gpu": 1.0, "gb": 1e9, "bytes": 1.0, "requests": 1.0}
# Which engine produced a source's numbers, by keyword in `source` (first match wins).
ENGINE_BY_SOURCE = (("tensorrt-llm v0.6", "trtllm-0.6"), ("tensorrt-llm v0.5", "trtllm-0.6"), ("tensorrt-llm", "trtllm"), ("splitwise", "vllm-2023"), ("distserve", "distserve"),
                    ("fastertransformer", "fastertransformer"), ("kipply", "fastertransformer"),
                    ("vidur", "pytorch-eager"), ("yao fu", "peak"), ("sglang", "sglang"), ("vllm", "vllm"))
_DTYPE_RE = re.compile(r"\b(fp8|fp16|bf16|int8|int4)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Point:
    """One measured point, normalised to SI units (seconds, tokens/s, bytes)."""

    line: int
    source: str
    model: str
    gpu: str
    tp: int
    batch: int | None  # None: the engine chose it (max-throughput runs)
    input_len: int
    output_len: int
    metric: str
    value: float  # in SI units
    engine: str
    dtype: str
    notes: str

    @property
    def kind(self) -> str:
        """'throughput' or 'latency' (the two error targets), or 'other'."""
        if self.metric.startswith("output_throughput"):
            return "throughput"
        if self.metric in ("kv_cache_per_request", "max_concurrency"):
            return "other"
        return "latency"


def _int(text: str, path: Path, line: int, column: str, allow_none: bool = False) -> int | None:
    t = text.strip()
    if allow_none and (t in ("-", "") or t.lower().startswith("max")):
        return None
    try:
        return int(float(t))
    except ValueError:
        raise InputError(f"{path}:{line}: column {column!r}: expected an integer, got {text!r}") from None


def engine_for(source: str, notes: str) -> str:
    text = f"{source} {notes}".lower()
    for key, engine in ENGINE_BY_SOURCE:
        if key in text:
            return engine
    return "vllm"


def dtype_for(notes: str) -> str:
    found = _DTYPE_RE.search(notes)
    return found.group(1).lower() if found else "fp16"


def read_points(path: str | Path) -> list[Point]:
    """Parse the CSV; every problem is reported as `file:line: column 'x': ...`."""
    p = Path(path)
    try:
        handle = p.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"cannot read measured points {str(p)!r}: {exc.strerror}") from None
    try:
        with handle:
            return _parse_points(handle, p)
    except UnicodeDecodeError as exc:
        raise InputError(f"{p}: not a UTF-8 text file (found byte 0x{exc.object[exc.start]:02x}); "
                         "measured points are a CSV text file") from None
    except csv.Error as exc:
        raise InputError(f"{p}: not a CSV text file ({exc})") from None


def _parse_points(handle, p: Path) -> list[Point]:
    """The rows of an open measured-points CSV as Points (see read_points)."""
    reader = csv.DictReader(handle)
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise InputError(f"{p}:1: missing column {missing[0]!r}; required: {', '.join(COLUMNS)}")
    points = []
    for row in reader:
        line = reader.line_num
        metric = (row["metric"] or "").strip()
        if metric not in METRICS:
            raise InputError(f"{p}:{line}: column 'metric': unknown {metric!r}; allowed: {', '.join(METRICS)}")
        unit = (row["unit"] or "").strip().lower()
        if unit not in UNIT_SCALE:
            raise InputError(f"{p}:{line}: column 'unit': unknown {row['unit']!r}; allowed: {', '.join(UNIT_SCALE)}")
        try:
            value = float(row["value"]) * UNIT_SCALE[unit]
        except (TypeError, ValueError):
            raise InputError(f"{p}:{line}: column 'value': expected a number, got {row['value']!r}") from None
        if not value > 0:
            raise InputError(f"{p}:{line}: column 'value': must be positive, got {row['value']!r}")
        notes = row.get("notes") or ""
        tp = _int(row["tp"], p, line, "tp")
        if tp is None or tp < 1:
            raise InputError(f"{p}:{line}: column 'tp': must be >= 1, got {row['tp']!r}")
        points.append(Point(
            line=line, source=row["source"].strip(), model=row["model"].strip(), gpu=row["gpu"].strip(), tp=tp,
            batch=_int(row["batch"], p, line, "batch", allow_none=True),
            input_len=_int(row["input_len"], p, line, "input_len") or 0,
            output_len=_int(row["output_len"], p, line, "output_len") or 0,
            metric=metric, value=value,
            engine=(row.get("engine") or "").strip().lower() or engine_for(row["source"], notes),
            dtype=(row.get("dtype") or "").strip().lower() or dtype_for(notes),
            notes=notes,
        ))
    return points
