"""A small PNG decoder (8-bit greyscale/RGB/RGBA, not interlaced) so tests need no imaging library.

Enough to read Chromium's screenshots and look at their pixels.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type -> samples per pixel


def read_png(path: Path) -> np.ndarray:
    """Return the pixels as a uint8 array of shape (height, width, channels)."""
    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG file")
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None:
        raise ValueError(f"{path} has no IHDR chunk")
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in _CHANNELS or interlace:
        raise ValueError(f"{path}: unsupported PNG (depth {depth}, colour {colour}, interlace {interlace})")
    bpp = _CHANNELS[colour]
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8)
    rows = raw.reshape(height, 1 + width * bpp)
    return _unfilter(rows[:, 0], rows[:, 1:], bpp).reshape(height, width, bpp)


def _unfilter(filters: np.ndarray, rows: np.ndarray, bpp: int) -> np.ndarray:
    out = np.zeros_like(rows)
    prev = np.zeros(rows.shape[1], dtype=np.uint8)
    for y in range(rows.shape[0]):
        line, kind = rows[y], filters[y]
        if kind == 0:
            cur = line.copy()
        elif kind == 1:  # Sub: running sum per channel along the row
            cur = (np.cumsum(line.reshape(-1, bpp).astype(np.uint32), axis=0) % 256).astype(np.uint8).ravel()
        elif kind == 2:  # Up
            cur = line + prev
        elif kind in (3, 4):
            cur = _sequential(line, prev, bpp, kind)
        else:
            raise ValueError(f"unknown PNG filter type {kind}")
        out[y] = prev = cur
    return out


def _sequential(line: np.ndarray, prev: np.ndarray, bpp: int, kind: int) -> np.ndarray:
    """Average and Paeth filters depend on the decoded left neighbour, so go byte by byte."""
    cur = bytearray(line.tobytes())
    up = prev.tobytes()
    for i in range(len(cur)):
        a = cur[i - bpp] if i >= bpp else 0
        b = up[i]
        if kind == 3:
            cur[i] = (cur[i] + ((a + b) >> 1)) & 0xFF
            continue
        c = up[i - bpp] if i >= bpp else 0
        p = a + b - c
        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
        pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
        cur[i] = (cur[i] + pred) & 0xFF
    return np.frombuffer(bytes(cur), dtype=np.uint8)
