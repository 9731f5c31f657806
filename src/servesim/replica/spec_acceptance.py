"""Draft acceptance that depends on how far a request's generation has gone.

`EngineConfig.spec_acceptance_curve` gives the per-draft acceptance rate as breakpoints over the
request's output position (tokens it has emitted before the step), linear between them and flat
outside. Why a curve at all: benchmark clients that send random-token prompts and force the
output length (`ignore_eos`) make the model's reply drift into repetition as it goes on, which
a multi-token-prediction head drafts well, so the accepted run grows with the position (the
measured DeepSeek-R1 MTP rows: docs/fidelity-history.md, "MTP runs: acceptance by output position").

The draws are the i.i.d. path's: a row of k_max uniforms from the engine's generator per
speculating decode, in batch order, a draft accepted while its uniform is below the rate (the
first rejection ends the run); only the rate is the request's own. Runs with a curve are stepped
one by one (the fast-forwarded stretches read counts drawn against one rate).
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Sequence

import numpy as np

DRAW_BLOCK_ROWS = 1024  # uniform rows drawn per generator call (any size gives the same numbers)


def curve_rate(curve: Sequence[tuple[int, float]], position: int) -> float:
    """The acceptance rate at output `position`: linear between the breakpoints (position,
    rate), which are sorted by position; the first rate before them, the last after."""
    return _rate(tuple(p for p, _ in curve), tuple(curve), position)


def _rate(positions: tuple[int, ...], curve: tuple[tuple[int, float], ...], position: int) -> float:
    i = bisect_right(positions, position)
    if i == 0:
        return curve[0][1]
    if i == len(curve):
        return curve[-1][1]
    (p0, r0), (p1, r1) = curve[i - 1], curve[i]
    return r0 + (r1 - r0) * (position - p0) / (p1 - p0)


class CurveDraws:
    """Accepted-draft counts for successive speculating decodes, each against the rate its
    request's output position gives (`curve_rate`)."""

    def __init__(self, rng, k_max: int, curve: Sequence[tuple[int, float]]) -> None:
        self._rng = rng
        self._k_max = k_max
        self._curve = tuple(curve)
        self._positions = tuple(p for p, _ in curve)  # (searched once per speculating decode)
        self._rows = np.empty((0, k_max))  # uniforms drawn; rows from `_pos` on not taken yet
        self._pos = 0

    def take_at(self, positions: Sequence[int]) -> list[int]:
        """The next len(positions) rows' counts, row i against the rate at positions[i]."""
        n = len(positions)
        if self._pos + n > len(self._rows):  # (the generator yields its doubles in order whatever the shape)
            rest = self._rows[self._pos:]
            self._rows = np.concatenate([rest, self._rng.random((max(DRAW_BLOCK_ROWS, n - len(rest)), self._k_max))])
            self._pos = 0
        rows = self._rows[self._pos:self._pos + n]
        self._pos += n
        counts = []
        for u, pos in zip(rows.tolist(), positions):
            rate, a = _rate(self._positions, self._curve, pos), 0
            while a < self._k_max and u[a] < rate:
                a += 1
            counts.append(a)
        return counts
