"""Number formatting for report tables: one place decides how a value of each kind looks."""

from __future__ import annotations

import math
from typing import Any

#: Kinds of value a metric can be; each has one formatter below.
KINDS = ("count", "ms", "s", "rate", "pct", "plain")


def is_number(value: Any) -> bool:
    """True for real numbers (bools excluded) that are finite or NaN-free enough to show."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_value(value: Any, kind: str) -> str:
    """Format `value` (seconds for "ms"/"s", a 0..1 fraction for "pct") for a table cell."""
    if value is None:
        return "–"
    if not is_number(value):
        return str(value)
    if math.isnan(value):
        return "–"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if kind == "count":
        return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"
    if kind == "ms":
        return _significant(value * 1000.0) + " ms"
    if kind == "s":
        return _significant(value) + " s"
    if kind == "pct":
        return f"{value * 100.0:.1f}%"
    if kind == "rate":
        return _significant(value) + "/s"
    return _significant(value)


def format_delta(base: Any, value: Any, kind: str) -> str:
    """The change from `base` to `value`: relative in percent, or in points for percentages."""
    if not (is_number(base) and is_number(value)) or math.isnan(base) or math.isnan(value):
        return ""
    if kind == "pct":
        return f"{(value - base) * 100.0:+.1f} pt"
    if base == 0:
        return "±0" if value == 0 else "new"
    return f"{(value - base) / abs(base) * 100.0:+.1f}%"


def relative_change(base: Any, value: Any) -> float | None:
    """(value - base) / |base|, or None when it is undefined."""
    if not (is_number(base) and is_number(value)) or base == 0:
        return None
    if math.isnan(base) or math.isnan(value) or math.isinf(base) or math.isinf(value):
        return None
    return (value - base) / abs(base)


def _significant(value: float) -> str:
    """About four significant digits without scientific notation for everyday magnitudes."""
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude >= 10:
        return f"{value:.2f}"
    if magnitude >= 0.01 or magnitude == 0:
        return f"{value:.3f}"
    return f"{value:.2e}"
