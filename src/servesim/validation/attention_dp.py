"""Attention-DP constants: fit `dp_step_s` and `dp_seq_s` per engine against TPOT of the DP rows.

Played with the lock-step model alone (perf/attention_dp.py), the attention-DP rows' decode steps
come out faster than measured, and the missing time grows with the step's sequences: vLLM's tp 2 x
dp 2 MiniMax-M2.5 runs measure the TPOT of a tp 2 replica serving every user alone (docs/
fidelity-history.md, "Attention data parallelism"), which the link and GEMM terms do not explain. The
missing time is taken as GPU time per lock-step step plus GPU time per sequence of the padded
batch (dp x the largest rank's sequences), fitted per engine by least squares on

    measured TPOT - simulated TPOT  =  dp_step_s + dp_seq_s x decode sequences per step

over the rows at even file positions (odd ones held out), each residual relative to the measured
TPOT (the error is judged relative; unweighted, the few slow rows set the constants and the fast
ones overshoot by 25 %), each constant kept >= 0. A decode step
of a row runs `decode_seqs(row)` sequences (its users dealt evenly over the ranks). Per
sequence rather than per token: a term per token would charge the prefill steps' thousands of
tokens the decode steps' missing time, and TTFT is not short by that much. Per engine
rather than per (GPU, engine): few attention-DP rows per GPU (6 on TensorRT-LLM H200).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from servesim.perf.calibration import Entry
from servesim.validation.silicon import SiliconRow, inexpressible_reason


def dp_rows(rows: list[SiliconRow], parity: int | None = None) -> list[tuple[int, SiliconRow]]:
    """(file position, row) of the expressible attention-DP rows, at positions of `parity` (None: all)."""
    return [(i, r) for i, r in enumerate(rows) if r.mode == "agg" and r.attention_dp > 1
            and (parity is None or i % 2 == parity) and inexpressible_reason(r) is None]


def decode_seqs(row: SiliconRow) -> int:
    """Sequences of the row's lock-step decode step: dp x the largest rank's."""
    dp = row.attention_dp
    per_rank = -(-min(row.concurrency, dp * max(row.batch_size, 1)) // dp)
    return dp * per_rank


def fit_line(points: Iterable[tuple[float, ...]]) -> tuple[float, float]:
    """Least squares (a, b) of y = a + b x with a, b >= 0 (a negative one refitted at 0), from
    (x, y) or (x, y, scale) points; with a scale each point's residual counts divided by it (the
    measured TPOT: relative errors, as the medians are taken, not milliseconds)."""
    cols = list(zip(*points))
    xs, ys = np.asarray(cols[0]), np.asarray(cols[1])
    w = 1.0 / np.asarray(cols[2]) if len(cols) > 2 else np.ones_like(xs)
    a, b = np.linalg.lstsq(np.stack([w, xs * w], axis=1), ys * w, rcond=None)[0]
    if b < 0:
        return max(0.0, float((ys * w * w).sum() / (w * w).sum())), 0.0
    if a < 0:
        return 0.0, max(0.0, float((xs * ys * w * w).sum() / (xs * xs * w * w).sum()))
    return float(a), float(b)


def fit_entries(results: list[tuple[SiliconRow, float]]) -> list[Entry]:
    """Calibration entries {engine} -> {dp_step_s, dp_seq_s} from (row, simulated TPOT s without
    the constants) of fitting rows."""
    by_engine: dict[str, list[tuple[float, float]]] = {}
    for row, sim_tpot_s in results:
        by_engine.setdefault(row.backend, []).append((float(decode_seqs(row)), row.tpot_s - sim_tpot_s, row.tpot_s))
    entries = []
    for engine, points in sorted(by_engine.items()):
        step_s, seq_s = fit_line(points)
        entries.append(Entry({"engine": engine}, {"dp_step_s": round(step_s, 6), "dp_seq_s": round(seq_s, 8)}))
    return entries
