"""CSV cells of a numeric column, made from its array with no Python call per cell.

`requests.csv` and `timeseries.csv` hold the text `csv.writer` writes for each value: an int's
`str`, a float's `repr` (the shortest string that reads back as the same float), an empty cell
for None and NaN. Made value by value, that is about 150 ns an int and 500-700 ns a float, the
bulk of writing a run folder (seven floats a request row). Here:

- ints go through a table of the strings of every value between the column's minimum and
  maximum, indexed by numpy (about 20 ns a cell), when that range is no longer than the column
  (so the table never costs more than the cells);
- floats are formatted by orjson (the optional `fast` extra) from the array in one call (about
  40 ns a value): it writes the same shortest round-trip digits as Python's repr (both are
  exact shortest, closest-to-the-value algorithms), in the same positional form for
  magnitudes in [1e-3, 1e15); values outside that window (where repr switches to an exponent,
  written differently by orjson), NaN and infinities are made by `repr` as before. At its first
  use the fast path checks itself against `repr` on a probe of values; if orjson is missing or
  formats differently, floats are made value by value.
"""

from __future__ import annotations

import numpy as np

try:  # optional: a faster float formatter (pip install 'servesim[fast]')
    import orjson
except ImportError:  # pragma: no cover - exercised where orjson is absent
    orjson = None

#: Magnitudes whose repr is positional and far from repr's switch to an exponent (1e-4, 1e16).
_LOW, _HIGH = 1e-3, 1e15
_checked: list[bool] = []  # [whether orjson's cells equal repr's on the probe], once known


def number_texts(values: np.ndarray, missing: np.ndarray | None = None) -> list[str]:
    """The cells of a 1-D int or float array: `str` of each value, "" where `missing` (a bool
    mask) is set and, for floats, where the value is NaN."""
    if values.dtype.kind == "f":
        return _float_texts(np.asarray(values, dtype=np.float64), missing)
    return _int_texts(np.asarray(values, dtype=np.int64), missing)


def _int_texts(values: np.ndarray, missing: np.ndarray | None) -> list[str]:
    present = values if missing is None else values[~missing]
    if not len(present):
        return [""] * len(values)
    lo, hi = int(present.min()), int(present.max())
    if hi - lo < max(len(values), 256):  # a table no longer than the column
        table = np.array(list(map(str, range(lo, hi + 1))) + [""], dtype=object)  # ("" last: missing)
        index = values - lo
        if missing is not None:
            index[missing] = hi - lo + 1
        return table[index].tolist()
    texts = list(map(str, values.tolist()))
    return _blank(texts, missing)


def _float_texts(values: np.ndarray, missing: np.ndarray | None) -> list[str]:
    nan = np.isnan(values)
    missing = nan if missing is None else (missing | nan)
    if not fast_floats():
        return _blank(list(map(repr, values.tolist())), missing)
    if len(values) == 0:
        return []
    texts = orjson.dumps(np.ascontiguousarray(values), option=orjson.OPT_SERIALIZE_NUMPY).decode()[1:-1].split(",")
    size = np.abs(values)
    outside = ~((size >= _LOW) & (size < _HIGH)) & (values != 0)  # (NaN and infinities are outside)
    odd = np.flatnonzero(outside & ~missing)
    for i, x in zip(odd.tolist(), values[odd].tolist()):
        texts[i] = repr(x)  # exponents, infinities (NaN is blanked below)
    return _blank(texts, missing)


def _blank(texts: list[str], missing: np.ndarray | None) -> list[str]:
    if missing is not None:
        for i in np.flatnonzero(missing).tolist():
            texts[i] = ""
    return texts


def fast_floats() -> bool:
    """Whether floats are formatted by orjson: installed, and equal to repr on a probe."""
    if not _checked:
        _checked.append(orjson is not None and _probe_agrees())
    return _checked[0]


def _probe_agrees() -> bool:
    rng = np.random.default_rng(0)
    probe = np.concatenate([
        [0.0, -0.0, 1.0, 0.1, 0.2, 0.30000000000000004, 2.5, 1e-3, 123456789012345.6, 999999999999999.9, 1e14],
        rng.random(512) * 1e4, rng.random(256) * 0.01 + 1e-3, np.round(rng.random(256) * 1e3, 3),
        np.exp(rng.uniform(np.log(_LOW), np.log(_HIGH), 512))])
    cells = orjson.dumps(probe, option=orjson.OPT_SERIALIZE_NUMPY).decode()[1:-1].split(",")
    return cells == list(map(repr, probe.tolist()))
