"""The trace schema: which columns (CSV) or keys (JSONL) mean what, and how each is parsed.

One row is one request. Only an arrival time (for replay) and the two lengths are required;
names from the Azure, Mooncake and Vidur files are accepted as aliases, so the shipped files
load unmodified. See docs/workloads.md, "Trace format".
"""

from __future__ import annotations

import json
import math
from datetime import date
from typing import Any, Callable

# Arrival-time columns and the factor that turns their value into seconds.
ARRIVAL_SECONDS = ("arrival_s", "timestamp_s")
ARRIVAL_MS = ("timestamp", "timestamp_ms")  # Mooncake: milliseconds since trace start
ARRIVAL_DATETIME = ("TIMESTAMP",)  # Azure: 'YYYY-MM-DD HH:MM:SS.fffffff'
PROMPT_COLUMNS = ("prompt_len", "input_length", "ContextTokens", "num_prefill_tokens", "input_tokens")
OUTPUT_COLUMNS = ("output_len", "output_length", "GeneratedTokens", "num_decode_tokens", "output_tokens")
HASH_COLUMN = "hash_ids"
HASH_BLOCK_COLUMN = "hash_block_tokens"
DEFAULT_HASH_BLOCK_TOKENS = 512  # Mooncake's block size, the only public trace with hashes


class CellError(ValueError):
    """A cell that does not parse; the reader adds file, line and column."""


#: Largest token count a cell may hold (a trace's lengths are kept as int32).
MAX_COUNT = 2**31 - 1


def parse_count(raw: Any) -> int:
    """A non-negative integer token count; a whole number written as a float is one too ("512.0":
    pandas writes an integer column holding an empty cell so)."""
    try:
        value = int(raw)
    except (TypeError, ValueError):
        value = _whole(raw)
    if value < 0 or (isinstance(raw, float) and raw != value):
        raise CellError(f"{raw!r} is not a non-negative integer")
    if value > MAX_COUNT:
        raise CellError(f"{raw!r} is above the largest count, {MAX_COUNT:,}")
    return value


def _whole(raw: Any) -> int:
    try:
        f = float(raw)
    except (TypeError, ValueError):
        f = math.nan
    if not (math.isfinite(f) and f.is_integer()):
        raise CellError(f"{raw!r} is not a non-negative integer")
    return int(f)


def parse_seconds(raw: Any) -> float:
    """A non-negative finite time in seconds (or milliseconds, scaled by the caller)."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise CellError(f"{raw!r} is not a non-negative number") from None
    if not value >= 0 or value == float("inf"):
        raise CellError(f"{raw!r} is not a non-negative number")
    return value


class DatetimeParser:
    """Parses 'YYYY-MM-DD HH:MM:SS[.fffffff]' to seconds since 1970, caching the date part
    (a trace spans few days, so the calendar arithmetic runs once per day, not per row)."""

    def __init__(self) -> None:
        self._day_s: dict[str, int] = {}

    def __call__(self, raw: Any) -> float:
        try:
            day = raw[:10]
            day_s = self._day_s.get(day)
            if day_s is None:
                day_s = (date.fromisoformat(day).toordinal() - 719163) * 86400
                self._day_s[day] = day_s
            if raw[10] not in " T" or raw[13] != ":" or raw[16] != ":":
                raise ValueError
            return day_s + int(raw[11:13]) * 3600 + int(raw[14:16]) * 60 + float(raw[17:])
        except (TypeError, ValueError, IndexError):
            raise CellError(f"{raw!r} is not a timestamp like '2023-11-16 18:15:46.680'") from None


def parse_hash_ids(raw: Any) -> tuple[int, ...]:
    """Prefix block ids: a JSON list (JSONL) or space/semicolon-separated integers (CSV)."""
    try:
        if isinstance(raw, list):
            return tuple(int(x) for x in raw)
        text = raw.strip()
        if text.startswith("["):
            return tuple(int(x) for x in json.loads(text))
        return tuple(int(x) for x in text.replace(";", " ").split())
    except (TypeError, ValueError, AttributeError):
        raise CellError(f"{raw!r} is not a list of integer block ids") from None


def parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no", ""):
        return False
    raise CellError(f"{raw!r} is not a boolean (true/false/1/0)")


def parse_int(raw: Any) -> int:
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise CellError(f"{raw!r} is not an integer") from None
    if not -2**63 < value < 2**63:  # (the request table's int64 columns; their smallest value means "none")
        raise CellError(f"{raw!r} is beyond a 64-bit integer")
    return value


def parse_positive_float(raw: Any) -> float:
    value = parse_seconds(raw)
    if value <= 0:
        raise CellError(f"{raw!r} is not a positive number")
    return value


# Optional per-request attribute columns -> (Request field, parser). Empty cells keep defaults.
ATTRIBUTE_COLUMNS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "tenant": ("tenant", str),
    "priority": ("priority", parse_int),
    "slo_class": ("slo_class", str),
    "ttft_slo_s": ("ttft_slo_s", parse_positive_float),
    "tpot_slo_s": ("tpot_slo_s", parse_positive_float),
    "is_offline": ("is_offline", parse_bool),
    "session_id": ("session_id", parse_int),
    "turn": ("turn", parse_count),
    "max_tokens": ("max_tokens", parse_count),
    "lora": ("lora", str),
    "model": ("model", str),  # (a cluster of pools serving several models routes by it)
}

# Column order the writers use (the canonical schema).
CANONICAL_COLUMNS = ("arrival_s", "prompt_len", "output_len", HASH_COLUMN, HASH_BLOCK_COLUMN, *ATTRIBUTE_COLUMNS)
